"""Core measurements (compile-only, no allocation): attention FLOPs, loss memory, parameter counts.

Run: python benchmarks/core.py            (CPU is fine: everything comes from XLA's analyses)
No flags (absl's --help and logging flags only); exit code 0 when the targets below are met, else 1.

1. Attention FLOPs (`cost_analysis()`) for one 384p video sample (text prefix + 7 frames of 4,084
   tokens), fast ("xla", query-blocked) and dense, as ratios to the FLOPs of the allowed (q, k)
   pairs (4 * head_dim flops per pair and head: QK^T and PV). Target: fast <= 1.15, dense ~1.75.
2. Loss temporary memory (`memory_analysis().temp_size_in_bytes`) of value_and_grad at L=32,768,
   d=2,048, vocab 129,536: chunked vs full-logits. Target: chunked <= 3% of naive.
3. Parameter counts of configs/lumos_1b.py and configs/lumos_3b.py.
"""
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from lumos_jax import attention, config, loss, model as model_lib, tokens


def _flops(compiled) -> float:
  ca = compiled.cost_analysis()
  return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])


def attention_flops(text_len=300, frames=7, grid=(48, 84), head_dim=128, heads=(2, 1), block_q=256):
  ids = tokens.build(np.arange(text_len) + 20_000, np.zeros((frames, *grid), np.int32), fps=12,
                     duration=2)
  lay = tokens.parse(ids)
  length, allowed_pairs = len(ids), int(np.sum(lay.k_end - lay.k_start))
  hq, hkv = heads
  q = jax.ShapeDtypeStruct((1, length, hq, head_dim), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, length, hkv, head_dim), jnp.float32)
  ranges = jax.ShapeDtypeStruct((1, length), jnp.int32)
  allowed_flops = 4 * head_dim * hq * allowed_pairs
  rows = []
  for impl in ("xla", "dense"):
    f = jax.jit(lambda q, k, v, s, e, impl=impl: attention.attend(
        q, k, v, s, e, impl=impl, block_q=block_q, max_lookahead=lay.max_lookahead))
    t0 = time.time()
    compiled = f.lower(q, kv, kv, ranges, ranges).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    rows.append((impl, _flops(compiled) / allowed_flops, temp, time.time() - t0))
  frame_tokens = lay.frame[lay.frame >= 0].size // frames
  print(f"\n## Attention FLOPs: {frames} frames x {frame_tokens} tokens "
        f"+ {text_len}-token text, L={length}, head_dim={head_dim}, heads={hq}/{hkv}, "
        f"block_q={block_q}, max_lookahead={lay.max_lookahead}")
  print(f"allowed pairs {allowed_pairs:,} of {length * length:,} "
        f"({allowed_pairs / length ** 2:.3f} of L^2)")
  print("| impl | executed / allowed FLOPs | temp MiB | compile s |")
  print("|---|---|---|---|")
  for impl, ratio, temp, secs in rows:
    print(f"| {impl} | {ratio:.3f} | {temp / 2**20:,.0f} | {secs:.1f} |")
  scan = attention.scan_pairs(length, block_q=block_q, max_lookahead=lay.max_lookahead)
  print(f"| xla_scan (16 groups; pairs counted from its block schedule, not cost_analysis) | "
        f"{scan / allowed_pairs:.3f} | | |")
  return dict((r[0], r[1]) for r in rows)


def loss_memory(length=32_768, d=2_048, vocab=129_536, chunk=256):
  """value_and_grad wrt (hidden, head_text, head_visual); naive scores the whole vocabulary."""
  off = tokens.LUMOS.visual_offset
  hidden = jax.ShapeDtypeStruct((1, length, d), jnp.float32)
  head_text = jax.ShapeDtypeStruct((d, off), jnp.float32)
  head_visual = jax.ShapeDtypeStruct((d, vocab - off), jnp.float32)
  targets = jax.ShapeDtypeStruct((1, length), jnp.int32)
  weights = jax.ShapeDtypeStruct((1, length), jnp.float32)
  temps = {}
  for name, fn in (("chunked", loss.chunked), ("naive", loss.naive)):
    f = jax.jit(jax.value_and_grad(
        lambda h, ht, hv, t, m, fn=fn: fn(h, hv, t, m, visual_offset=off, chunk=chunk,
                                          head_text=ht)[0], argnums=(0, 1, 2)))
    compiled = f.lower(hidden, head_text, head_visual, targets, weights).compile()
    temps[name] = compiled.memory_analysis().temp_size_in_bytes
  print(f"\n## Loss value_and_grad temp memory: L={length:,}, d={d:,}, vocab={vocab:,}, "
        f"chunk={chunk}")
  print("| loss | temp MiB |")
  print("|---|---|")
  for name, temp in temps.items():
    print(f"| {name} | {temp / 2**20:,.1f} |")
  ratio = temps["chunked"] / temps["naive"]
  print(f"chunked / naive = {100 * ratio:.2f}% (target <= 3%)")
  return ratio


def parameter_counts():
  print("\n## Parameters")
  print("| config | layers | d_model | heads/kv | mlp | parameters |")
  print("|---|---|---|---|---|---|")
  for name in ("lumos_1b", "lumos_3b"):
    cfg = config.model_config(config.load(name))
    n = sum(x.size for x in jax.tree.leaves(model_lib.abstract_model(cfg)[1]))
    print(f"| {name} | {cfg.n_layers} | {cfg.d_model} | {cfg.n_heads}/{cfg.n_kv_heads} | "
          f"{cfg.mlp_dim} | {n:,} ({n / 1e9:.2f}B) |")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: core.py takes no arguments")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
  ratios = attention_flops()
  attention_flops(head_dim=64, heads=(32, 8))  # the 1B head shape
  loss_ratio = loss_memory()
  parameter_counts()
  ok = ratios["xla"] <= 1.15 and loss_ratio <= 0.03
  print(f"\ntargets {'met' if ok else 'NOT met'}")
  return 0 if ok else 1


if __name__ == "__main__":
  app.run(main)
