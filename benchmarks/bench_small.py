"""bench_small: the train step's forward and forward+backward on one real official record, per remat
policy, each in a fresh process; optionally side by side with another checkout.

  python benchmarks/bench_small.py                                # every policy, this checkout
  python benchmarks/bench_small.py --policies=full,none --compare=/tmp/prev   # + another checkout
  python benchmarks/bench_small.py --memory_budget=8              # mark what fits 8 GiB
  python benchmarks/bench_small.py --policies=attn_out --compare=/tmp/prev --rounds=3  # medians

Model "bench-small": 4 layers, d 512, 8/8 heads of 64, MLP 1,536, the official 129,536-id
vocabulary (untied head), MM-RoPE, float32 (--dtype=bfloat16: bfloat16 matmuls, float32
parameters), model.attention="xla" (--attention). Input: the official video sample 0
(`../shared/data/lumos_official_samples`) cut to 2 latent frames (8,439 tokens), a tube mask at
ratio 0.711 (5,740 loss tokens). The computation is
`lumos_jax.train.step.batch_loss` (what the trainer differentiates) under `jax.jit`, forward alone
and `jax.grad` of it.

Per policy, one fresh process (`--worker`): compile both, run each once untimed (first-touch
page faults and caches), then once timed. Printed: forward s, forward+backward s and their ratio;
the recompute factor = XLA-counted FLOPs of forward+backward / (3 x those of the forward) (1.0 =
nothing computed twice: a backward costs two forwards); XLA's temp bytes of forward+backward
(`memory_analysis()`); the process's peak RSS; user and system CPU seconds and minor page faults of
the timed forward+backward; and `brate`, the backward's FLOPs per second over the forward's
((3 x recompute - 1) / (forward+backward / forward - 1), from XLA's counts and the two times).
A forward+backward of at most R x the forward needs brate >= (3 x recompute - 1) / (R - 1): the
footer prints that for R = 2.5, issue 14's target. `--compare=DIR` runs the same worker
against the lumos_jax package of another checkout (e.g. `git worktree add /tmp/prev HEAD~3`)
with its default policy, so the speed-up is measured in one run on one machine; `--rounds=N`
alternates N such rounds and reports each entry's median run and the median per-round speed-up
(a machine shared with other work changed one step's time by a third within an hour). Results
also go to --out as JSON.

`--floor` adds, per policy, the same step with attention's mask and softmax removed (each query
block's two matmuls at the same shapes and layouts, the scaled scores standing in for the
probabilities): not a model, what this formulation's elementwise passes cost. It bounds a better
softmax, not a better layout: before attention went heads-major (2026-11-29) the floor measured
35-49 s where the heads-major step took 31-47 s (the machine's speed varied).
"""
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORDS = REPO.parent / "shared" / "data" / "lumos_official_samples"
GiB = 2 ** 30

flags.DEFINE_list("policies", [], "model.remat policies to measure (default: every one)")
flags.DEFINE_string("compare", "", "another checkout whose lumos_jax runs beside (its default "
                    "remat policy), e.g. the previous commit in a git worktree")
flags.DEFINE_float("memory_budget", 0.0, "GiB: mark the policies whose XLA temp + arguments fit")
flags.DEFINE_string("out", "/tmp/bench_small.json", "JSON results")
flags.DEFINE_string("worker", "", "internal: measure this policy ('default': the package's own) "
                    "in this process and print one JSON line")
flags.DEFINE_integer("frames", 2, "latent frames of the official record to keep")
flags.DEFINE_string("attention", "xla", "model.attention (xla_scan: the memory-bounded path)")
flags.DEFINE_string("dtype", "float32", "model.dtype, the compute dtype (parameters stay float32)")
flags.DEFINE_integer("rounds", 1, "measure every entry this many times, alternating (each "
                     "policy, then --compare, then again), and report each entry's median run and "
                     "the median of the per-round speed-ups: on a shared machine one run each can "
                     "differ by a third")
flags.DEFINE_bool("floor", False, "also measure each policy with attention's mask and softmax "
                  "removed (what they cost; see the module docstring)")
FLAGS = flags.FLAGS


def _record_ids(frames: int):
  import numpy as np

  from lumos_jax import tokens
  from lumos_jax.data import safe_pickle
  entries = json.loads((RECORDS / "pre_tokenize/data/test_video/merge-record.json").read_text())
  ids = np.asarray(safe_pickle.load(RECORDS / entries[0]["file"])["token"], np.int32)
  return tokens.cut_frames(ids, tokens.parse(ids), frames)


def _batch(frames: int, ratio: float = 0.711):
  """The official record cut to `frames`, tube-masked at `ratio`, as a batch of one."""
  import numpy as np

  from lumos_jax import masking, tokens
  ids = _record_ids(frames)
  lay = tokens.parse(ids)
  first = lay.content & (lay.frame == lay.frame[lay.content][0])
  pattern = masking.random_pattern(np.random.default_rng(0), int(first.sum()), ratio)
  masked = masking.apply_frame_pattern(ids, lay, pattern, tokens.LUMOS)[1]
  batch = {"inputs": np.where(masked, tokens.LUMOS.mask, ids), "targets": ids,
           "weights": (masked & lay.code).astype(np.float32), "positions": lay.positions,
           "index": lay.index, "k_start": lay.k_start, "k_end": lay.k_end}
  return {k: v[None] for k, v in batch.items()}, lay.max_lookahead


def _model_cfg(policy: str, lookahead: int):
  import dataclasses

  from lumos_jax.model import ModelConfig
  cfg = ModelConfig(vocab_size=129_536, visual_offset=65_536, d_model=512, n_layers=4, n_heads=8,
                    n_kv_heads=8, head_dim=64, mlp_dim=1536, rope_variant="mm", dtype=FLAGS.dtype,
                    attention=FLAGS.attention, attention_block_q=256, max_lookahead=lookahead)
  return cfg if policy == "default" else dataclasses.replace(cfg, remat=policy)


def _flops(compiled) -> float:
  ca = compiled.cost_analysis()
  return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])


def usage(fn) -> dict:
  """Wall seconds, user and system CPU seconds and minor page faults of one call of `fn()`."""
  before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  fn()
  seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
  return {"s": seconds, "user_s": after.ru_utime - before.ru_utime,
          "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt -
          before.ru_minflt}


def _timed(fn, *args) -> dict:
  import jax
  jax.block_until_ready(fn(*args))  # untimed: first touch of every buffer
  return usage(lambda: jax.block_until_ready(fn(*args)))


def _remove_softmax() -> None:
  """--floor: attention keeps its two matmuls per query block and loses the mask and softmax."""
  import jax.numpy as jnp

  from lumos_jax import attention

  def matmuls_only(qh, kh, vh, k_start, k_end):
    del k_start, k_end
    b, h, g, lq, d = qh.shape
    scores = jnp.einsum("bhqd,bhkd->bhqk", qh.reshape(b, h, g * lq, d), kh,
                        preferred_element_type=jnp.float32)
    out = jnp.einsum("bhqk,bhkd->bhqd", (scores * d ** -0.5).astype(vh.dtype), vh,
                     preferred_element_type=jnp.float32)
    return out.reshape(qh.shape).astype(qh.dtype)
  attention._flash_attention = matmuls_only  # read at trace time by the blocked paths


def worker(policy: str) -> dict:
  """Measures one policy in this process (see the module docstring)."""
  import functools

  import jax
  from flax import nnx

  if FLAGS.floor:
    _remove_softmax()

  from lumos_jax.model import Decoder
  from lumos_jax.train.step import batch_loss
  batch, lookahead = _batch(FLAGS.frames)
  model_cfg = _model_cfg(policy, lookahead)
  graphdef, params = nnx.split(Decoder(model_cfg, rngs=nnx.Rngs(0)))
  loss_fn = functools.partial(batch_loss, graphdef=graphdef, model_cfg=model_cfg, loss_chunk=256)
  fwd = jax.jit(lambda p, b: loss_fn(p, b)[0]).lower(params, batch).compile()
  bwd = jax.jit(jax.grad(lambda p, b: loss_fn(p, b)[0])).lower(params, batch).compile()
  mem = bwd.memory_analysis()
  out = {"policy": model_cfg.remat, "tokens": int(batch["inputs"].shape[1]),
         "loss_tokens": int(batch["weights"].sum()), "fwd": _timed(fwd, params, batch),
         "fwd_bwd": _timed(bwd, params, batch),
         "recompute_factor": _flops(bwd) / (3 * _flops(fwd)),
         "xla_temp_gib": mem.temp_size_in_bytes / GiB,
         "xla_args_gib": mem.argument_size_in_bytes / GiB,
         "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB}
  out["bwd_over_fwd"] = out["fwd_bwd"]["s"] / out["fwd"]["s"]
  return out


def _spawn(policy: str, pythonpath: pathlib.Path, floor: bool = False) -> dict:
  env = dict(os.environ, PYTHONPATH=str(pythonpath), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, __file__, f"--worker={policy}", f"--frames={FLAGS.frames}",
                         f"--attention={FLAGS.attention}", f"--dtype={FLAGS.dtype}",
                         f"--floor={floor}"], env=env, capture_output=True, text=True)
  if proc.returncode:
    return {"policy": policy, "error": proc.stderr.strip().splitlines()[-1:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def backward_rate(r: dict, ratio: float | None = None) -> float:
  """The backward pass's XLA-counted FLOPs per second over the forward's, from a worker result:
  the backward executes (3 x recompute - 1) forwards' FLOPs in (forward+backward / forward - 1)
  forwards' time. `ratio`: that forward+backward / forward instead of the measured one (what
  reaching it would need)."""
  return (3 * r["recompute_factor"] - 1) / ((ratio or r["bwd_over_fwd"]) - 1)


def _row(name: str, r: dict) -> str:
  if "error" in r:
    return f"{name:<22} error: {r['error']}"
  fits = ""
  if FLAGS.memory_budget:
    fits = "fits" if r["xla_temp_gib"] + r["xla_args_gib"] <= FLAGS.memory_budget else "over"
  return (f"{name:<22} {r['fwd']['s']:7.1f} {r['fwd_bwd']['s']:8.1f} {r['bwd_over_fwd']:6.2f} "
          f"{r['recompute_factor']:7.3f} {r['xla_temp_gib']:7.2f} {r['peak_rss_gib']:7.2f} "
          f"{r['fwd_bwd']['user_s']:7.1f} {r['fwd_bwd']['sys_s']:6.1f} "
          f"{r['fwd_bwd']['minor_faults'] / 1e6:7.2f} {backward_rate(r):6.2f} {fits}")


def _measure(entries: dict) -> dict[str, list[dict]]:
  """{name: [one result per round]}: every entry once per round, in order, `--rounds` times."""
  results = {name: [] for name in entries}
  for i in range(FLAGS.rounds):
    for name, (policy, path, floor) in entries.items():
      results[name].append(_spawn(policy, path, floor))
      if FLAGS.rounds > 1:
        r = results[name][-1]
        took = "error" if "error" in r else f"{r['fwd_bwd']['s']:.1f} s"
        print(f"round {i + 1}/{FLAGS.rounds} {name}: forward+backward {took}", flush=True)
  return results


def _median(results: list[dict]) -> dict:
  """The run with the median forward+backward time (the first error if none ran)."""
  ok = sorted((r for r in results if "error" not in r), key=lambda r: r["fwd_bwd"]["s"])
  return ok[(len(ok) - 1) // 2] if ok else results[0]


def _print_speedups(rounds: dict[str, list[dict]]):
  """Per entry: forward+backward time of --compare / its own, per round (each pair measured
  minutes apart) and their median."""
  for name, results in rounds.items():
    if name.startswith("compare"):
      continue
    ratios = sorted(b["fwd_bwd"]["s"] / r["fwd_bwd"]["s"]
                    for r, b in zip(results, rounds["compare:default"])
                    if "error" not in r and "error" not in b)
    if ratios:
      each = ", ".join(f"{x:.2f}x" for x in ratios)
      print(f"speed-up of {name} over {FLAGS.compare}: {ratios[(len(ratios) - 1) // 2]:.2f}x"
            + (f" (median of rounds: {each})" if len(ratios) > 1 else ""))


def main(argv):
  del argv
  if FLAGS.worker:
    print(json.dumps(worker(FLAGS.worker)))
    return
  if not RECORDS.is_dir():
    sys.exit(f"bench_small needs the official records at {RECORDS} (../shared beside the repo)")
  from lumos_jax import model
  policies = FLAGS.policies or [p for p, r in model.REMAT_POLICIES.items() if r.runs_on("cpu")]
  entries = {p: (p, REPO, False) for p in policies}
  if FLAGS.floor:
    entries.update({f"floor:{p}": (p, REPO, True) for p in policies})
  if FLAGS.compare:
    entries["compare:default"] = ("default", pathlib.Path(FLAGS.compare).resolve(), False)
  rounds = _measure(entries)
  runs = {name: _median(results) for name, results in rounds.items()}
  print(f"{'policy':<22} {'fwd s':>7} {'f+b s':>8} {'ratio':>6} {'recomp':>7} {'tempGiB':>7} "
        f"{'rssGiB':>7} {'user s':>7} {'sys s':>6} {'Mfaults':>7} {'brate':>6}")
  for name, r in runs.items():
    print(_row(name, r))
  for name, r in runs.items():
    if "error" not in r:
      print(f"{name}: forward+backward <= 2.5 x forward needs brate >= "
            f"{backward_rate(r, 2.5):.2f} (measured {backward_rate(r):.2f})")
  if FLAGS.rounds > 1:
    print(f"(each row: the median of {FLAGS.rounds} runs by forward+backward time; all runs in "
          f"{FLAGS.out})")
  if FLAGS.compare:
    _print_speedups(rounds)
  pathlib.Path(FLAGS.out).write_text(json.dumps(
      runs if FLAGS.rounds == 1 else {"median": runs, "rounds": rounds}, indent=1))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
