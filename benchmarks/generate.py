"""Generation time per frame, KV-cached vs full recomputation, with the FLOP-bound time beside it.

  python benchmarks/generate.py [--workdir=/tmp/lumos_demo]       # demo config, CPU
  python benchmarks/generate.py --model=1b                         # 1B-shaped random model, GPU

`--model=demo` (default): the demo's trained geometry (configs/demo.py: 4 frames of 6x6 latents),
16 steps, CFG 1.5, as launch/demo.sh samples; with --workdir the trained run's parameters are used,
else a random demo-shaped model (timing does not depend on weights).
`--model=1b`: configs/lumos_1b.py's decoder with random weights at 256p (32x56 latents, 1,828
tokens per frame block), 7 latent frames, 50 steps, CFG 15, an 80-token prompt.

Each path runs once to compile (blocking after every frame, with XLA's compile time summed from
jax.monitoring events, so run time = wall - compile) and, unless --single_pass, once more timed
(compilations are reused across calls); the table uses the second pass, or with --single_pass the
first pass's wall - compile (on the GPU the 1B full-recomputation path compiles one program per
frame, ~5 min, and a second pass would not fit a 10-minute device call). FLOP-bound
time = useful FLOPs / the rate of a large matmul measured in the same run, in the model's compute
dtype (--peak_tflops overrides). Useful FLOPs per decoding step: the forward of both CFG rows'
frame tokens through every layer (matmul weights + attention over the keys each query may see +
the visual head: `lumos_jax.train.metrics.forward_flops_per_token`, the one FLOP model); the
full-recomputation path also recomputes every earlier token at every step.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from lumos_jax import config, sample, tokens
from lumos_jax.model import Decoder
from lumos_jax.train.metrics import forward_flops_per_token

SHAPES = {  # name -> (config, height, width, frames, steps, cfg scale); 0: the run's trained one
    "demo": ("demo", 0, 0, 0, 16, 1.5),
    "1b": ("lumos_1b", 32, 56, 7, 50, 15.0),
}

flags.DEFINE_enum("model", "demo", sorted(SHAPES), "demo: CPU-sized; 1b: configs/lumos_1b.py")
flags.DEFINE_string("workdir", "", "use a trained run's parameters (demo only; default: "
                    "random weights)")
flags.DEFINE_integer("steps", 0, "masked-decoding steps per frame (0: the model's default)",
                     lower_bound=0)
flags.DEFINE_integer("frames", 0, "latent frames (0: the model's default)", lower_bound=0)
flags.DEFINE_bool("single_pass", False, "time the first pass (wall - compile) instead of a "
                  "second pass")
flags.DEFINE_float("peak_tflops", 0.0, "FLOP-bound rate in TFLOP/s (0: measure a matmul)")
FLAGS = flags.FLAGS


def useful_flops_per_frame(mc, prefix: int, block: int, frame: int, steps: int, cached: bool):
  """Useful FLOPs of decoding frame `frame` (0-based) for both CFG rows (cond length counted)."""
  end = prefix + (frame + 1) * block
  # Keys per query are approximations (a frame token sees its whole block, so the exact count of
  # allowed pairs is 2-4% higher on both shapes); kept so that the README's numbers stay comparable.
  own = steps * 2 * block * forward_flops_per_token(mc, end - block / 2)
  if cached:  # plus one forward of the block that writes its history-masked keys to the cache
    return own + 2 * block * forward_flops_per_token(mc, end - block / 2)
  # Full recomputation: every step also reruns everything before the block.
  return own + steps * 2 * (end - block) * forward_flops_per_token(mc, (end - block) / 2)


class CompileClock:
  """Seconds XLA spent tracing, lowering and compiling since the last `take()`."""

  def __init__(self):
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, name, duration, **kwargs):
    if name.startswith("/jax/core/compile/"):
      self.seconds += duration

  def take(self) -> float:
    s, self.seconds = self.seconds, 0.0
    return s


def matmul_tflops(dtype, n: int = 8192 if jax.default_backend() == "gpu" else 2048) -> float:
  """Measured rate of an n x n x n matmul in `dtype` (TFLOP/s), best of 5 after a warm-up."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(5):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e12


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: generate.py takes --flags only")
  args = FLAGS
  name, height, width, frames, steps, cfg_scale = SHAPES[args.model]
  frames, steps = args.frames or frames, args.steps or steps
  if args.workdir:
    sampler, cfg, vocab = sample.load(args.workdir)
  else:
    cfg = config.load(name)
    vocab = config.vocab(cfg)
    t0 = time.perf_counter()
    model = Decoder(config.model_config(cfg), rngs=nnx.Rngs(0))
    strides = tuple(cfg.data.get("strides", tokens.LUMOS_STRIDES))
    sampler = sample.Sampler(model, vocab, strides=strides)
    print(f"random {args.model} model built in {time.perf_counter() - t0:.1f} s", flush=True)
  mc = sampler.cfg
  synthetic = sample.synthetic_tokenizer(cfg) if cfg.data.kind == "synthetic" else None
  if not height:  # synthetic runs: the grid and frame count they trained on
    height = width = synthetic.cfg.grid
    frames = args.frames or synthetic.cfg.frames
  sc = sample.SampleConfig(frames=frames, height=height, width=width, fps=4, duration=2,
                           steps=steps, cfg_scale=cfg_scale,
                           code_limit=synthetic.n_codes if synthetic else 0)
  text = (vocab.encode_text("a red circle moves left") if vocab.byte_text_offset is not None
          else np.arange(1000, 1080))  # any 80 text ids: timing does not depend on them
  p = sample.plan(vocab, text, sc, strides=sampler.strides)
  print(f"{jax.devices()[0].device_kind}: {frames} frames of {height}x{width} latents "
        f"({p.block} tokens per block, {p.prefix + frames * p.block} in all), {steps} steps",
        flush=True)
  seconds, flops, clock = {}, {}, CompileClock()
  for label, cached in (("KV cache", True), ("full recomputation", False)):
    clock.take()
    t0 = time.perf_counter()
    sampler.generate(text, sc, cached=cached, progress=True)  # blocks per frame: no overlap
    wall = time.perf_counter() - t0
    compile_s = clock.take()
    seconds[label] = (wall - compile_s) / frames
    print(f"{label}: first pass {wall:.1f} s, of which compiling {compile_s:.1f} s: "
          f"{seconds[label]:.3f} s/frame", flush=True)
    if not args.single_pass:
      t0 = time.perf_counter()
      sampler.generate(text, sc, cached=cached)
      seconds[label] = (time.perf_counter() - t0) / frames
      print(f"{label}: second pass {seconds[label]:.3f} s/frame", flush=True)
    flops[label] = np.mean([useful_flops_per_frame(mc, p.prefix, p.block, f, steps, cached)
                            for f in range(frames)])
  peak = args.peak_tflops or matmul_tflops(jnp.dtype(mc.dtype))
  print(f"\n## Generation, {args.model} model, {frames} frames of {height}x{width} latents, "
        f"{steps} steps, CFG {cfg_scale}, {jax.devices()[0].device_kind}")
  print(f"FLOP bound at {peak:.2f} TFLOP/s ({'given' if args.peak_tflops else 'measured'} "
        f"{jnp.dtype(mc.dtype).name} matmul)")
  print(f"timing: {'first pass, wall - compile' if args.single_pass else 'second pass'}")
  print("| path | s/frame | useful GFLOP/frame | FLOP-bound s/frame | achieved TFLOP/s |")
  print("|---|---|---|---|---|")
  for label, s in seconds.items():
    tf = flops[label] / 1e12
    print(f"| {label} | {s:.3f} | {tf * 1e3:,.1f} | {tf / peak:.4f} | {tf / s:.2f} |")
  print(f"speed-up of the cache: {seconds['full recomputation'] / seconds['KV cache']:.2f}x")
  return 0


if __name__ == "__main__":
  app.run(main)
