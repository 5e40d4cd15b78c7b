"""Input-pipeline throughput: samples/s and tokens/s with 0, 1 and 2 grain worker processes.

Run: python benchmarks/pipeline.py [--batches=30]

Datasets:
  official: the 12 official video samples (../shared/data/lumos_official_samples) imported with
            `--frames 7` (about 28.9k tokens each), seq_len 32,768, batch 1 (skipped with a message
            when ../shared is absent);
  synthetic: 2,000 embedded shape videos (8 frames of 8x8 latents, about 640 tokens), seq_len 704,
            batch 32.
Each measurement builds a fresh pipeline, takes one warm-up batch (worker start-up, first reads),
then times the next `--batches` batches. Tokens count the real (non-padding) tokens.
"""
import io
import pathlib
import tempfile
import time

from absl import app, flags

from lumos_jax import tokens
from lumos_jax.data import official, pipeline, records
from lumos_jax.synthetic import dataset as synthetic

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared/data/lumos_official_samples"

flags.DEFINE_integer("batches", 30, "batches timed per measurement (after one warm-up batch)",
                     lower_bound=1)
FLAGS = flags.FLAGS


def measure(source, cfg, vocab, batches):
  it = iter(pipeline.build([source], cfg, vocab, process_index=0, process_count=1))
  next(it)
  t0, n_tokens = time.perf_counter(), 0
  for _ in range(batches):
    n_tokens += int(next(it)["valid"].sum())
  secs = time.perf_counter() - t0
  return batches * cfg.batch_size / secs, n_tokens / secs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: pipeline.py takes --flags only")
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="lumos_pipeline_bench_"))
  datasets = []
  if (SAMPLES / "pre_tokenize").is_dir():
    official.import_lumos(SAMPLES / "pre_tokenize/data/test_video/merge-record.json",
                          tmp / "official", root=SAMPLES, frames=7, log=io.StringIO())
    datasets.append(("official video, 7 frames", records.RecordSource(tmp / "official"),
                     tokens.LUMOS, dict(seq_len=32_768, batch_size=1)))
  else:
    print(f"official samples not found at {SAMPLES}: measuring the synthetic dataset only")
  cfg = synthetic.SyntheticConfig()
  tok, vocab = synthetic.PatchTokenizer(cfg), tokens.Vocab.compact()
  records.write_records(tmp / "synthetic", (synthetic.to_record(synthetic.generate(0, i, cfg), i,
                                                                tok, vocab) for i in range(2000)),
                        vocab=vocab)
  datasets.append(("synthetic 8x8x8", records.RecordSource(tmp / "synthetic"), vocab,
                   dict(seq_len=704, batch_size=32, strides=(1, 4, 4))))

  print(f"\n## Pipeline throughput ({FLAGS.batches} batches after one warm-up batch)")
  print("| dataset | workers | samples/s | tokens/s |")
  print("|---|---|---|---|")
  for name, source, vocab, kw in datasets:
    for workers in (0, 1, 2):
      pcfg = pipeline.PipelineConfig(seed=0, workers=workers, **kw)
      sps, tps = measure(source, pcfg, vocab, FLAGS.batches)
      print(f"| {name} | {workers} | {sps:,.1f} | {tps:,.0f} |", flush=True)
  return 0


if __name__ == "__main__":  # app.run parses the flags grain's worker processes read
  app.run(main)
