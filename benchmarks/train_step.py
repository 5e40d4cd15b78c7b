"""Train-step measurements: compile time, XLA memory per device, FLOPs, and (where it runs) speed.

Run (CPU, 8 forced devices):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/train_step.py
  python benchmarks/train_step.py --configs=tiny,demo --run_steps=5 --peak_tflops=989   # a GPU

For every config: the step is lowered with abstract inputs on the config's mesh (AOT, nothing is
allocated) and compiled; `memory_analysis()` gives per-device argument/output/temp bytes and
`cost_analysis()` the FLOPs (XLA counts a loop body once: with model.attention="xla_scan" the
attention inside its `lax.map` is undercounted, so its TFLOP column is a lower bound). Configs
listed in --run also execute `--run_steps` steps on random data for tokens/s and MFU (MFU needs
--peak_tflops per device). `--mesh=1,8,1` overrides every config's mesh, `--attention=xla_scan`
their model.attention. The 1B/3B configs are compile-only here: with scan + remat + chunked loss
their per-device footprint on an 8-device fsdp mesh should be about 1/8 of the single-device
argument bytes plus activations.

`--remat=none,dots_attn_out,full` compiles every config once per rematerialisation policy and adds
the recompute factor (XLA-counted FLOPs of the step / 3 x those of the loss's forward: 1.0 = the
backward pass recomputes nothing); `--memory_budget=GiB` marks which fit (model.remat="auto" takes
the first that fits, in model.REMAT_POLICIES order; configs with remat="auto" are resolved here
against --memory_budget, default 80 GiB: the 1B/3B configs' target GPU). Per-policy wall time,
fwd/bwd ratio, peak RSS and page faults on a real record: benchmarks/bench_small.py.
"""
import functools
import itertools
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
from absl import app, flags

from lumos_jax import checkpoint, config, model as model_lib, sharding
from lumos_jax.train.loop import global_batch
from lumos_jax.train import step as step_lib
from lumos_jax.train.step import build_functions

GiB = 2 ** 30

flags.DEFINE_list("configs", ["tiny", "demo", "lumos_1b", "lumos_3b"],
                  "configs/<name>.py to measure")
flags.DEFINE_list("run", ["tiny", "demo"], "configs that also execute --run_steps steps")
flags.DEFINE_integer("run_steps", 3, "timed steps per config in --run, after one warm-up step "
                     "(0: compile only)", lower_bound=0)
flags.DEFINE_float("peak_tflops", 0.0, "per-device peak TFLOP/s, for MFU (0: no MFU)")
flags.DEFINE_list("mesh", [], "override every config's mesh (data,fsdp,tensor), e.g. 1,8,1")
flags.DEFINE_string("attention", "", "override model.attention (xla, xla_scan)")
flags.DEFINE_list("remat", [], "model.remat policies to compile for every config (default: each "
                  "config's own); e.g. --remat=none,dots_attn_out,full")
flags.DEFINE_float("memory_budget", 0.0, "GiB per device: mark which policy's step fits (the "
                   "choice model.remat=auto makes)")
FLAGS = flags.FLAGS


def forward_flops(cfg, model_cfg, fns) -> float:
  """XLA-counted FLOPs of the loss alone (the forward the step differentiates)."""
  graphdef, _ = model_lib.abstract_model(model_cfg)
  params = checkpoint.abstract_like(fns.abstract_state, fns.state_sh)["params"]
  loss_fn = functools.partial(step_lib.batch_loss, graphdef=graphdef, model_cfg=model_cfg,
                              loss_chunk=cfg.loss_chunk)
  compiled = jax.jit(lambda p, b: loss_fn(p, b)[0]).lower(
      params, step_lib.abstract_batch(cfg, fns.batch_sh)).compile()
  return _flops(compiled)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def random_batch(cfg, vocab, rng):
  """A structurally valid batch: every row one causal text span (no frames) with random targets."""
  b, length = cfg.data.batch_size, cfg.data.seq_len
  q = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length))
  targets = rng.integers(vocab.visual_offset, vocab.visual_offset + vocab.visual_size, (b, length))
  return {"inputs": np.full((b, length), vocab.mask, np.int32), "targets": targets.astype(np.int32),
          "weights": np.ones((b, length), np.float32), "positions": np.repeat(q[..., None], 3, -1),
          "index": q, "k_start": np.zeros((b, length), np.int32), "k_end": q + 1,
          "frame": np.zeros((b, length), np.int32), "valid": np.ones((b, length), bool)}


def measure(name, mesh_override, run_steps, peak_tflops, attention=None, remat=None):
  cfg = config.load(name)
  if remat:
    cfg.model.remat = remat
  if mesh_override:
    cfg.mesh = mesh_override
  if attention:
    cfg.model.attention = attention
  n_dev = jax.device_count()
  mesh_shape, model_cfg, vocab = config.validate(cfg, n_dev)
  mesh = sharding.make_mesh(mesh_shape)
  if model_cfg.remat == "auto":  # the configs' target device, not this host's forced CPU devices
    cfg.memory_budget_gib = FLAGS.memory_budget or 80.0
    model_cfg = step_lib.choose_remat(cfg, mesh, model_cfg)
  fns = build_functions(cfg, mesh, model_cfg)
  state_abs = checkpoint.abstract_like(fns.abstract_state, fns.state_sh)
  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    compiled = fns.step.lower(state_abs, step_lib.abstract_batch(cfg, fns.batch_sh)).compile()
    compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  flops = _flops(compiled)
  recompute = flops / (3 * forward_flops(cfg, model_cfg, fns))  # outside the mesh: no
  # constraints, the same FLOPs
  param_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree.leaves(fns.abstract_state["params"]))
  row = dict(config=f"{name} ({cfg.model.attention}, remat {model_cfg.remat})",
             mesh="x".join(map(str, mesh_shape)), compile_s=compile_s, recompute=recompute,
             step_gib=step_lib.step_memory_gib(compiled),
             arg_gib=mem.argument_size_in_bytes / GiB, out_gib=mem.output_size_in_bytes / GiB,
             temp_gib=mem.temp_size_in_bytes / GiB, state_gib_total=3 * param_bytes / GiB,
             tflop_per_device=flops / 1e12, tokens_per_s=None, mfu=None)
  if run_steps:
    with jax.set_mesh(mesh):
      state = fns.init()
      batch = global_batch(random_batch(cfg, vocab, np.random.default_rng(0)), fns.batch_sh)
      state, m = fns.step(state, batch)
      jax.block_until_ready(m)
      t0 = time.perf_counter()
      for _ in range(run_steps):
        state, m = fns.step(state, batch)
      jax.block_until_ready(m)
      secs = (time.perf_counter() - t0) / run_steps
    row["tokens_per_s"] = cfg.data.batch_size * cfg.data.seq_len / secs
    if peak_tflops:
      row["mfu"] = flops * n_dev / secs / (peak_tflops * 1e12 * n_dev)
  return row


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: train_step.py takes --flags only")
  try:
    mesh = tuple(int(x) for x in FLAGS.mesh) or None
  except ValueError:
    raise app.UsageError(f"--mesh={','.join(FLAGS.mesh)}: expected comma-separated integers "
                         "(data,fsdp,tensor), e.g. --mesh=1,8,1") from None
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}")
  print("| config | mesh | compile s | args GiB/dev | out GiB/dev | temp GiB/dev | "
        "params+adam GiB total | TFLOP/step/dev | recompute | tokens/s | MFU | fits |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, remat in itertools.product(FLAGS.configs, FLAGS.remat or [None]):
    r = measure(name, mesh, FLAGS.run_steps if name in FLAGS.run else 0, FLAGS.peak_tflops,
                FLAGS.attention or None, remat)
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    fits = "n/a" if not FLAGS.memory_budget else (
        "yes" if r["step_gib"] <= FLAGS.memory_budget else "no")
    print(f"| {r['config']} | {r['mesh']} | {r['compile_s']:.1f} | {r['arg_gib']:.3f} | "
          f"{r['out_gib']:.3f} | {r['temp_gib']:.3f} | {r['state_gib_total']:.3f} | "
          f"{r['tflop_per_device']:.3f} | {r['recompute']:.2f} | "
          f"{fmt(r['tokens_per_s'], ',.0f')} | {fmt(r['mfu'], '.1%')} | {fits} |",
          flush=True)
  return 0


if __name__ == "__main__":
  app.run(main)
