"""Generation time per frame, KV-cached vs full recomputation, for the demo config on this machine.

Run: python benchmarks/generate.py [--workdir=/tmp/lumos_demo] [--steps 16] [--frames 8]

With --workdir the trained run's parameters are used, else a random demo-shaped model (the timing
does not depend on the weights). Each path runs once to compile and once timed (compilations are reused across calls); the table gives
seconds per frame and the speed-up. (The GPU measurement of a 1B model at 256p is not done yet.)
"""
import argparse
import sys
import time

from flax import nnx

from lumos_jax import config, sample
from lumos_jax.model import Decoder


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="")
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--frames", type=int, default=8)
  args = parser.parse_args(argv)
  if args.workdir:
    from lumos_jax import generate
    sampler, cfg, vocab = generate.load(args.workdir)
  else:
    cfg = config.load("demo")
    vocab = config.vocab(cfg)
    sampler = sample.Sampler(Decoder(config.model_config(cfg), rngs=nnx.Rngs(0)), vocab,
                             strides=tuple(cfg.data.strides))
  sc = sample.SampleConfig(frames=args.frames, height=8, width=8, fps=4, duration=2,
                           steps=args.steps, cfg_scale=3.0, code_limit=121)
  text = vocab.encode_text("a red circle moves left")
  seconds = {}
  for name, cached in (("KV cache", True), ("full recomputation", False)):
    sampler.generate(text, sc, cached=cached)  # compiles (reused by the timed call)
    t0 = time.perf_counter()
    sampler.generate(text, sc, cached=cached)
    seconds[name] = (time.perf_counter() - t0) / sc.frames
  print(f"\n## Generation, demo config, {sc.frames} frames of 8x8 latents, {sc.steps} steps, CFG")
  print("| path | s/frame |")
  print("|---|---|")
  for name, s in seconds.items():
    print(f"| {name} | {s:.3f} |")
  print(f"speed-up of the cache: {seconds['full recomputation'] / seconds['KV cache']:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
