"""Packing vs padding on an image/video mix: pipeline tokens/s, padding fraction, and the real
tokens/s of a tiny model's forward + backward pass, printed side by side.

Run: PYTHONPATH=. python benchmarks/packing.py [--batches=40] [--steps=5] [--seq_len=1024]
       [--pack_bins=8]

Data (in memory, compact vocabulary, random codes): half images (1 frame of 8x8 latents, about
100 tokens with the caption), half videos (8 frames, about 640 tokens), mixed 1:1 as two weighted
sources; rows of `--seq_len` tokens (1,024: an image alone in a row is ~90% padding, like a
4,084-token image in a 32,768-token row), `--batch` rows per batch. The pipeline is timed over
`--batches` batches after one warm-up batch; tokens count real (valid) tokens only. The step is
configs/tiny.py's model (2 layers, d 64; frames up to 8x8 fit its lookahead), a jitted
value-and-grad of `batch_loss` on this host's first device, timed over `--steps` steps after a
compile step, on the first batches of each pipeline.
"""
import functools
import time

import jax
import numpy as np
from absl import app, flags

from lumos_jax import config, model as model_lib, tokens
from lumos_jax.data import pipeline
from lumos_jax.train import step

flags.DEFINE_integer("batches", 40, "pipeline batches timed (after one warm-up batch)")
flags.DEFINE_integer("steps", 5, "forward + backward steps timed (after a compile step); 0: none")
flags.DEFINE_integer("seq_len", 1024, "tokens per row")
flags.DEFINE_integer("batch", 8, "rows per batch")
flags.DEFINE_integer("pack_bins", 8, "rows the packer fills at once (PipelineConfig.pack_bins)")
flags.DEFINE_integer("records", 2000, "records per source (images, videos)")
FLAGS = flags.FLAGS
VOCAB = tokens.Vocab.compact()


def sources(n: int, seed: int = 0):
  """(images, videos): n record dicts each, 1-frame and 8-frame samples of 8x8 latents."""
  rng = np.random.default_rng(seed)

  def record(i, frames):
    text = rng.integers(VOCAB.byte_text_offset, VOCAB.visual_offset, size=int(rng.integers(5, 20)))
    codes = rng.integers(0, VOCAB.visual_size, size=(frames, 8, 8))
    return {"id": str(i), "tokens": tokens.build(text, codes, fps=8, duration=1, vocab=VOCAB)}
  return [record(i, 1) for i in range(n)], [record(i, 8) for i in range(n)]


def pipeline_numbers(srcs, cfg, batches: int) -> dict:
  """Real tokens/s, samples per row and padding fraction of `batches` batches (after a warm-up)."""
  it = iter(pipeline.build(srcs, cfg, VOCAB, weights=[1, 1], process_index=0, process_count=1))
  next(it)
  t0, valid, samples = time.perf_counter(), 0, 0
  for _ in range(batches):
    b = next(it)
    valid += int(b["valid"].sum())
    samples += int((b["valid"] & (b["index"] == 0)).sum())
  secs = time.perf_counter() - t0
  rows = batches * cfg.batch_size
  return {"pipeline tokens/s": valid / secs, "samples/row": samples / rows,
          "padding fraction": 1 - valid / (rows * cfg.seq_len)}


def step_tokens_per_sec(srcs, cfg, steps: int) -> float:
  """Real (valid) tokens per second of the tiny model's jitted value-and-grad of batch_loss."""
  model_cfg = config.model_config(config.load("tiny"))
  graphdef, params = model_lib.init_model(model_cfg, 0)
  fn = jax.jit(jax.value_and_grad(functools.partial(
      step.batch_loss, graphdef=graphdef, model_cfg=model_cfg, loss_chunk=256), has_aux=True))
  it = iter(pipeline.build(srcs, cfg, VOCAB, weights=[1, 1], process_index=0, process_count=1))
  batches = [next(it) for _ in range(steps + 1)]
  jax.block_until_ready(fn(params, batches[0]))  # compile
  t0, valid = time.perf_counter(), 0
  for b in batches[1:]:
    jax.block_until_ready(fn(params, b))
    valid += int(b["valid"].sum())
  return valid / (time.perf_counter() - t0)


def main(argv):
  del argv
  srcs = sources(FLAGS.records)
  results = {}
  for name, pack in (("padded", False), ("packed", True)):
    cfg = pipeline.PipelineConfig(seq_len=FLAGS.seq_len, batch_size=FLAGS.batch, seed=0,
                                  strides=(1, 4, 4), pack=pack,
                                  pack_bins=FLAGS.pack_bins)
    results[name] = pipeline_numbers(srcs, cfg, FLAGS.batches)
    if FLAGS.steps:
      results[name]["step real tokens/s"] = step_tokens_per_sec(srcs, cfg, FLAGS.steps)
  print(f"seq_len {FLAGS.seq_len}, {FLAGS.batch} rows/batch, images:videos 1:1, "
        f"pack_bins {FLAGS.pack_bins}, device {jax.devices()[0].device_kind}")
  print(f"{'':22s}{'padded':>14s}{'packed':>14s}")
  for key in results["padded"]:
    print(f"{key:22s}" + "".join(f"{results[n][key]:14,.3f}" for n in ("padded", "packed")))


if __name__ == "__main__":
  app.run(main)
