"""Accelerator check: versions, matmul/copy rates, every attention implementation, the 1B train step
and 1B sampling on one device, printed and written as one JSON file.

  python benchmarks/accelerator.py --out=/tmp/accelerator.json        # one H100/H200, ~7 min (est.)
  JAX_PLATFORMS=cpu python benchmarks/accelerator.py --smoke           # tiny shapes, CPU, seconds
  launch/accelerator_check.sh                                          # the same on a GPU machine

Sections (JSON keys; each is also printed as one line per measurement):
  versions         python, jax, jaxlib, flax, tokamax, backend, device kind, date.
  throughput       bf16 n x n x n matmul TFLOP/s (2 n^3 FLOPs, median of timed calls after a
                   warm-up) and device copy GB/s (x + 1 on a float32 array: bytes read + written).
  attention        per self-attention implementation, on the 384p training layout (80 text tokens
                   + 7 frames of 48 x 84 latents, 4,084 tokens per frame block) with the 1B head
                   shape (configs/lumos_1b.py), batch 1, bf16: forward and forward+backward ms,
                   TFLOP/s, executed / allowed (q, k) pairs, and the max |error| against `dense` in
                   float32 on the same inputs (at full size on a sample of query rows, see
                   `ref_rows`). FLOP model: forward = 4 x head_dim x heads x executed pairs (QK^T,
                   PV); forward+backward = 3.5 x forward (backward = 2.5 x forward: QK^T recomputed,
                   dV, dP, dQ, dK). `useful_tflops` uses the allowed pairs instead.
  cache_attention  per cache implementation, the 256p sampling shape: the last frame block (1,828
                   queries, 32 x 56 latents) of 2 CFG rows (row 1 unconditional, left-padded:
                   its k_start = pad > 0) against a KV cache of the whole 7-frame sequence;
                   forward only.
  train_parts      the 1B step's pieces outside the decoder layers, each jitted alone at its
                   shapes: chunked loss value+gradient, embedding gradient, clip + AdamW + apply
                   on the whole parameter tree (ms each; where a step's fixed cost goes).
  train_step       configs/lumos_1b.py on one device (batch 1, the 384p sample padded to
                   data.seq_len, block-causal key ranges), model.attention = "xla_scan" (baseline)
                   and attention.resolve("auto") (the step passes no attention plan): tokens/s and
                   MFU against the measured matmul rate and against --reference_tflops, with the
                   project's FLOP model (lumos_jax.train.metrics.train_flops_per_token).
  sampling         benchmarks/generate.py's 1B shape (256p, 7 frames, 50 steps, CFG 15, KV cache)
                   per model.attention: s/frame of a second pass (compile time excluded), and the
                   first pass's wall - compile (jax.monitoring compile events).
  errors           "section[/implementation]: message" for everything that raised; implementations
                   that are unavailable here (missing dependency, wrong backend) are "skipped" with
                   their reason instead.
--smoke: the same code paths at tiny shapes (2 frames of 4 x 4 latents, head_dim 16, 2 heads / 1 KV
head in float32, configs/tiny.py, 2 sampling steps); tests/unit/test_accelerator_check.py runs it.
The JSON is rewritten after every section, so a run cut short keeps what it measured.

On a GPU machine without internet, tokamax (and its small dependencies) come from a wheelhouse made
where pip can reach PyPI (xprof, which tokamax imports only for its own profiling, is stubbed by
lumos_jax.attention_kernels and left out):
  pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
      --no-deps -d wheelhouse tokamax==0.0.17 jaxtyping wadler-lindig pydantic pydantic-core \
      annotated-types typing-inspection qwix einshape
  # on the GPU machine (launch/accelerator_check.sh does this when ./wheelhouse exists):
  pip install --no-index --find-links=wheelhouse --no-deps tokamax==0.0.17 jaxtyping \
      wadler-lindig pydantic pydantic-core annotated-types typing-inspection qwix einshape
"""
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # generate.py; lumos_jax from a checkout
import generate

from lumos_jax import attention, attention_plan, config, loss, sample, sharding, tokens
from lumos_jax import model as model_lib
from lumos_jax.data import pipeline
from lumos_jax.model import Decoder
from lumos_jax.train.metrics import train_flops_per_token
from lumos_jax.train import optim
from lumos_jax.train.step import functions_for

SECTIONS = ("versions", "throughput", "attention", "cache_attention", "train_parts", "train_step",
            "sampling")
SELF_IMPLS = ("dense", "xla", "xla_scan", "tokamax", "tokamax_bands", "cudnn_bands", "splash")
CACHE_IMPLS = ("dense", "tokamax", "cudnn")
GiB = 2 ** 30

flags.DEFINE_bool("smoke", False, "tiny shapes everywhere (CPU, seconds)")
flags.DEFINE_string("out", "/tmp/accelerator.json", "where the JSON goes")
flags.DEFINE_list("sections", list(SECTIONS), f"sections to run, of {','.join(SECTIONS)}")
flags.DEFINE_float("reference_tflops", 989.0, "peak bf16 dense TFLOP/s for the second MFU "
                   "(989: H100 SXM)")
flags.DEFINE_integer("train_layers", 0, "decoder layers of the train step (0: the config's)",
                     lower_bound=0)
flags.DEFINE_integer("train_steps", 0, "timed train steps after a warm-up step (0: 3, smoke 2)",
                     lower_bound=0)
flags.DEFINE_string("train_remat", "", "model.remat of the train step ('' : the config's; "
                    "'auto' is resolved by train.step.functions_for as in the trainer)")
flags.DEFINE_list("train_runs", ["baseline", "best"], "which train-step runs: baseline "
                  "(xla_scan) and/or best (attention auto)")
flags.DEFINE_list("sample_runs", ["baseline", "best"], "which sampling runs: baseline "
                  "(xla_scan) and/or best (attention auto)")
flags.DEFINE_integer("sample_frames", 0, "sampled frames (0: 7, smoke 2)", lower_bound=0)
flags.DEFINE_integer("sample_steps", 0, "decoding steps per frame (0: 10 of the full 50, smoke 2); "
                     "fewer steps are extrapolated linearly to the full count", lower_bound=0)
flags.DEFINE_list("skip_impls", ["xla"], "self-attention implementations not timed at full size "
                  "(xla: its forward+backward compile took 230 s of an H200's 15-minute lease, "
                  "and xla_scan times the same within 3%); --smoke times all")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Every size the check uses; `full()` and `smoke()` below."""
  matmul_n: int  # n of the n x n x n matmul
  copy_bytes: int  # float32 array copied (x + 1)
  iters: int  # timed calls per measurement (median)
  text_len: int  # text tokens of the video layouts
  train_video: tuple  # (frames, height, width) latents: the attention and train-step layout
  heads: tuple  # (q heads, kv heads, head_dim) of the attention sections
  attn_dtype: str
  block_q: int  # xla / xla_scan query block
  ref_rows: int  # query rows compared with the float32 dense reference
  dense_limit_bytes: float  # larger dense [B, H, Lq, Lk] float32 logits are skipped
  train_config: str
  train_seq_len: int  # 0: the config's data.seq_len (the sample is padded to it)
  sample_config: str
  sample_video: tuple  # (frames, height, width, steps, cfg scale)


def full() -> Shapes:
  _, height, width, frames, steps, scale = generate.SHAPES["1b"]
  m = config.load("lumos_1b").model
  gpu = jax.default_backend() == "gpu"
  return Shapes(matmul_n=8192 if gpu else 2048, copy_bytes=(2 if gpu else 0.25) * GiB, iters=5,
                text_len=80, train_video=(7, 48, 84), heads=(m.n_heads, m.n_kv_heads, m.head_dim),
                attn_dtype="bfloat16", block_q=m.attention_block_q, ref_rows=1024,
                dense_limit_bytes=24 * GiB, train_config="lumos_1b", train_seq_len=0,
                sample_config="lumos_1b",
                sample_video=(frames, height, width, steps, scale))


def smoke() -> Shapes:
  return Shapes(matmul_n=128, copy_bytes=2 ** 22, iters=2, text_len=8, train_video=(2, 4, 4),
                heads=(2, 1, 16), attn_dtype="float32", block_q=16, ref_rows=1 << 30,
                dense_limit_bytes=GiB, train_config="tiny", train_seq_len=64,
                sample_config="tiny",
                sample_video=(2, 4, 4, 2, 3.0))


# ---------------------------------------------------------------- helpers


def timed(f, *args, iters: int, chain: bool = False) -> tuple[float, float]:
  """(median seconds of `iters` calls, seconds of the first call incl. compile); blocks on each.
  chain: f returns its next arguments, as a call that donates its inputs must (each feeds the
  next)."""
  def call(args):
    out = jax.block_until_ready(f(*args))
    return out if chain else args

  t0 = time.perf_counter()
  args = call(args)
  first, times = time.perf_counter() - t0, []
  for _ in range(iters):
    t0 = time.perf_counter()
    args = call(args)
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), first


def text_ids(vocab: tokens.Vocab, n: int) -> np.ndarray:
  """n text ids of `vocab` (content does not matter for timing)."""
  if vocab.byte_text_offset is not None:
    return np.asarray(vocab.encode_text("x" * n))
  return np.arange(n) + 20_000


def video_layout(vocab: tokens.Vocab, n_text: int, video: tuple, strides=tokens.LUMOS_STRIDES):
  """(ids int32 [L], Layout) of one closed text + video sample in the official layout."""
  frames, h, w = video
  ids = tokens.build(text_ids(vocab, n_text), np.zeros((frames, h, w), np.int32), fps=12,
                     duration=2, vocab=vocab)
  return ids, tokens.parse(ids, vocab, strides)


def version_of(dist: str) -> str | None:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def record_error(result: dict, where: str, err: BaseException) -> str:
  msg = f"{type(err).__name__}: {err}".strip()[:2000]
  result["errors"].append(f"{where}: {msg}")
  print(f"ERROR {where}: {msg}", flush=True)
  traceback.print_exc()
  return msg


# ---------------------------------------------------------------- versions, throughput


def versions_section(sh: Shapes, result: dict) -> dict:
  del sh, result
  dev = jax.devices()[0]
  out = {"python": platform.python_version(), "jax": jax.__version__,
         "jaxlib": version_of("jaxlib"), "flax": version_of("flax"),
         "tokamax": version_of("tokamax"),
         "cuda_plugin": version_of("jax-cuda13-plugin") or version_of("jax-cuda12-plugin"),
         "backend": jax.default_backend(), "device_kind": dev.device_kind,
         "device_count": jax.device_count(), "host": platform.node(),
         "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
  print(f"versions: {out}", flush=True)
  return out


def throughput_section(sh: Shapes, result: dict) -> dict:
  """bf16 matmul TFLOP/s and float32 copy GB/s (10^9 bytes read + written per second)."""
  del result
  n = sh.matmul_n
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  secs, _ = timed(jax.jit(lambda a: a @ a), a, iters=sh.iters)
  matmul = {"n": n, "dtype": "bfloat16", "seconds": secs, "tflops": 2 * n ** 3 / secs / 1e12}
  del a
  x = jnp.zeros((int(sh.copy_bytes) // 4,), jnp.float32)
  secs, _ = timed(jax.jit(lambda x: x + 1), x, iters=sh.iters)
  copy = {"bytes": x.nbytes, "seconds": secs, "gb_per_s": 2 * x.nbytes / secs / 1e9}
  print(f"matmul {n}^3 bf16: {matmul['tflops']:.1f} TFLOP/s; copy {x.nbytes / GiB:.2f} GiB: "
        f"{copy['gb_per_s']:.0f} GB/s", flush=True)
  return {"matmul": matmul, "copy": copy}


# ---------------------------------------------------------------- attention


def blocked_pairs(length: int, block_q: int, max_lookahead: int) -> int:
  """(q, k) pairs `attention.xla_blocked` computes: each query block against [0, hi + lookahead)."""
  return sum((min(length, lo + block_q) - lo) * min(length, lo + block_q + max_lookahead)
             for lo in range(0, length, block_q))


def executed_pairs(name: str, k_start, k_end, *, lk: int, block_q: int, max_lookahead: int):
  """(executed (q, k) pairs per row, how they were counted) of implementation `name`."""
  lq = k_end.shape[-1]
  if name == "dense":
    return lq * lk, "exact: every (q, k) pair"
  if lq == lk and name == "xla":
    return blocked_pairs(lq, block_q, max_lookahead), "exact: query blocks x reachable prefix"
  if lq == lk and name == "xla_scan":
    return (attention.scan_pairs(lq, block_q=block_q, max_lookahead=max_lookahead),
            "exact: attention.scan_pairs")
  if lq == lk and name in getattr(attention, "NEEDS_PLAN", ()):
    return (attention_plan.plan_of(k_start, k_end).pairs,
            "band-by-band: plan.pairs (a kernel's tile rounding adds a few %)")
  return (attention_plan.allowed_pairs(k_start, k_end),
          "estimate: allowed pairs (a fused kernel skipping masked tiles; its backward over a "
          "whole sequence may execute more)")


def skip_reason(name: str, registry: dict, registry_name: str) -> str | None:
  """Why `name` cannot run here, or None."""
  if name not in registry:
    return f"not in attention.{registry_name} (not landed in this checkout)"
  ok, why = attention.available(name)
  return None if ok else why


def random_qkv(shape_q, shape_kv, dtype):
  kq, kk, kv, kg = jax.random.split(jax.random.key(1), 4)
  return (jax.random.normal(kq, shape_q, dtype), jax.random.normal(kk, shape_kv, dtype),
          jax.random.normal(kv, shape_kv, dtype), jax.random.normal(kg, shape_q, jnp.float32))


def reference(q, k, v, k_start, k_end, rows):
  """float32 dense attention of query rows `rows` (int [R]) -> [B, R, Hq, D]."""
  f32 = lambda x: x.astype(jnp.float32)
  out = jax.jit(attention.dense)(f32(q[:, rows]), f32(k), f32(v), k_start[:, rows],
                                 k_end[:, rows])
  return jax.block_until_ready(out)


def measure_impl(call, args, cotangent, ref, rows, *, flops: float, useful: float, iters: int,
                 backward: bool) -> dict:
  """Times one implementation (forward, and forward+backward if `backward`) and its error."""
  fwd = jax.jit(call)
  secs, first = timed(fwd, *args, iters=iters)
  out = fwd(*args)
  err = float(jnp.max(jnp.abs(out[:, rows].astype(jnp.float32) - ref)))
  row = {"status": "ok", "fwd_ms": 1e3 * secs, "fwd_first_call_s": first,
         "fwd_tflops": flops / secs / 1e12, "fwd_useful_tflops": useful / secs / 1e12,
         "max_abs_err": err, "finite": bool(jnp.isfinite(out).all())}
  del out
  if backward:
    loss = lambda q, k, v, s, e: jnp.sum(call(q, k, v, s, e).astype(jnp.float32) * cotangent)
    secs, first = timed(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), *args, iters=iters)
    row.update(fwd_bwd_ms=1e3 * secs, fwd_bwd_first_call_s=first,
               fwd_bwd_tflops=3.5 * flops / secs / 1e12,
               fwd_bwd_useful_tflops=3.5 * useful / secs / 1e12)
  return row


def run_impls(where: str, names, registry_name: str, case: dict, sh: Shapes, result: dict):
  """{name: measurement or skip/error record} over `names` for one attention case."""
  registry = getattr(attention, registry_name, None)
  if registry is None:
    registry = {"dense": attention.dense} if registry_name == "CACHE_IMPLEMENTATIONS" else {}
  out = {}
  for name in dict.fromkeys([*names, *sorted(registry)]):
    why = skip_reason(name, registry, registry_name)
    if where == "attention" and not FLAGS.smoke and name in FLAGS.skip_impls:
      why = "in --skip_impls"
    if name == "dense" and case["dense_bytes"] > sh.dense_limit_bytes:
      why = (f"dense float32 logits need {case['dense_bytes'] / GiB:.1f} GiB "
             f"(> {sh.dense_limit_bytes / GiB:.0f}); its pairs are still counted")
    pairs, how = executed_pairs(name, case["k_start_np"], case["k_end_np"], lk=case["lk"],
                                block_q=sh.block_q, max_lookahead=case["max_lookahead"])
    row = {"executed_pairs": pairs, "allowed_pairs": case["allowed"],
           "executed_over_allowed": pairs / case["allowed"], "pairs_count": how}
    if why:
      out[name] = {"status": "skipped", "reason": why, **row}
      print(f"{where} {name}: skipped ({why})", flush=True)
      continue
    plan = case["plan"] if name in getattr(attention, "NEEDS_PLAN", ()) else None
    opts = dict(impl=name, block_q=sh.block_q, max_lookahead=case["max_lookahead"])
    if plan is not None:
      opts["plan"] = plan
    call = lambda q, k, v, s, e, opts=opts: attention.attend(q, k, v, s, e, **opts)
    per_pair = 4 * case["head_dim"] * case["heads"] * case["batch"]
    try:
      row.update(measure_impl(call, case["args"], case["cotangent"], case["ref"], case["rows"],
                              flops=per_pair * pairs, useful=per_pair * case["allowed"],
                              iters=sh.iters, backward=case["backward"]))
    except (ImportError, NotImplementedError) as e:
      row.update(status="skipped", reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # recorded; the check goes on
      row.update(status="error", error=record_error(result, f"{where}/{name}", e))
    out[name] = row
    print(f"{where} {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in row.items() if k != "pairs_count"),
          flush=True)
  return out


def make_case(q_shape, kv_shape, k_start, k_end, *, sh: Shapes, backward: bool, plan: bool,
              max_lookahead: int) -> dict:
  """Inputs, reference and bookkeeping of one attention case (k_start/k_end numpy [B, Lq])."""
  q, k, v, g = random_qkv(q_shape, kv_shape, jnp.dtype(sh.attn_dtype))
  b, lq, hq, d = q_shape
  rows = np.unique(np.linspace(0, lq - 1, min(lq, sh.ref_rows)).astype(np.int32))
  ks, ke = jnp.asarray(k_start, jnp.int32), jnp.asarray(k_end, jnp.int32)
  ref = reference(q, k, v, ks, ke, jnp.asarray(rows))
  return {"args": (q, k, v, ks, ke), "cotangent": g, "ref": ref, "rows": jnp.asarray(rows),
          "k_start_np": k_start, "k_end_np": k_end, "lk": kv_shape[1], "batch": b, "heads": hq,
          "head_dim": d, "allowed": attention_plan.allowed_pairs(k_start, k_end),
          "plan": attention_plan.plan_of(k_start, k_end) if plan else None,
          "dense_bytes": 4.0 * b * hq * lq * kv_shape[1], "backward": backward,
          "max_lookahead": max_lookahead, "ref_rows": len(rows)}


def attention_section(sh: Shapes, result: dict) -> dict:
  """Self-attention of the 384p training layout (smoke: 2 frames of 4 x 4), batch 1."""
  _, lay = video_layout(tokens.LUMOS, sh.text_len, sh.train_video)
  length, (hq, hkv, d) = len(lay), sh.heads
  case = make_case((1, length, hq, d), (1, length, hkv, d), lay.k_start[None], lay.k_end[None],
                   sh=sh, backward=True, plan=True, max_lookahead=lay.max_lookahead)
  layout = {"text_tokens": sh.text_len, "frames": sh.train_video[0],
            "latents": list(sh.train_video[1:]), "length": length,
            "frame_block": tokens.frame_block_length(*sh.train_video[1:]),
            "max_lookahead": lay.max_lookahead, "heads": hq, "kv_heads": hkv, "head_dim": d,
            "batch": 1, "dtype": sh.attn_dtype, "block_q": sh.block_q,
            "ref_rows": case["ref_rows"], "reference": "dense in float32 on the same inputs, "
            "query rows evenly spaced over the sequence (ref_rows of length)"}
  print(f"attention layout: {layout}", flush=True)
  impls = run_impls("attention", SELF_IMPLS, "IMPLEMENTATIONS", case, sh, result)
  return {"layout": layout, "flop_model": "fwd = 4 * head_dim * heads * executed pairs; "
          "fwd_bwd = 3.5 * fwd (backward 2.5x forward); useful_* use allowed pairs",
          "impls": impls}


def cache_section(sh: Shapes, result: dict) -> dict:
  """One frame block of 2 CFG rows against the KV cache of the whole sampled sequence."""
  frames, h, w = sh.sample_video[:3]
  sc = sample.SampleConfig(frames=frames, height=h, width=w, fps=4, duration=2)
  p = sample.plan(tokens.LUMOS, text_ids(tokens.LUMOS, sh.text_len), sc)
  sl = slice(p.prefix + (frames - 1) * p.block, p.prefix + frames * p.block)
  k_start, k_end = p.k_start[:, sl], p.k_end[:, sl]
  length, (hq, hkv, d) = p.ids.shape[1], sh.heads
  case = make_case((2, p.block, hq, d), (2, length, hkv, d), k_start, k_end, sh=sh,
                   backward=False, plan=False, max_lookahead=p.block - 1)
  layout = {"text_tokens": sh.text_len, "frames": frames, "latents": [h, w], "queries": p.block,
            "keys": length, "rows": 2, "k_start": [int(k_start[0, 0]), int(k_start[1, 0])],
            "k_end": int(k_end[0, 0]), "heads": hq, "kv_heads": hkv, "head_dim": d,
            "dtype": sh.attn_dtype, "ref_rows": case["ref_rows"],
            "reference": "dense in float32 on the same inputs"}
  print(f"cache attention layout: {layout}", flush=True)
  impls = run_impls("cache_attention", CACHE_IMPLS, "CACHE_IMPLEMENTATIONS", case, sh, result)
  return {"layout": layout, "flop_model": "fwd = 4 * head_dim * heads * rows * executed pairs "
          "per row", "impls": impls}


# ---------------------------------------------------------------- train step


def train_batch(sh: Shapes, cfg, vocab, seq_len: int) -> tuple[dict, int]:
  """(one 384p sample (smoke: its tiny form) padded to seq_len as a batch, numpy [1, L, ...];
  the sample's length): its block-causal key ranges and positions, random visual targets."""
  strides = tuple(cfg.data.get("strides", tokens.LUMOS_STRIDES))
  ids, lay = video_layout(vocab, sh.text_len, sh.train_video, strides)
  lay = tokens.pad(lay, seq_len)
  rng = np.random.default_rng(0)
  inputs = np.zeros(seq_len, np.int32)
  inputs[:len(ids)] = ids
  targets = rng.integers(vocab.visual_offset, vocab.visual_offset + vocab.visual_size, seq_len)
  batch = {"inputs": inputs, "targets": targets.astype(np.int32),
           "weights": lay.code.astype(np.float32)}
  batch.update({f: getattr(lay, f) for f in pipeline.FIELDS if f not in batch})
  return {k: np.asarray(v)[None] for k, v in batch.items()}, len(ids)


def train_run(sh: Shapes, impl: str) -> dict:
  """One device, batch 1: compile, one warm-up step, then timed steps."""
  cfg = config.load(sh.train_config)
  cfg.mesh, cfg.data.batch_size, cfg.optim.accum_steps = (1, 1, 1), 1, 1
  cfg.model.attention = impl
  cfg.model.remat = FLAGS.train_remat or cfg.model.remat
  if FLAGS.train_layers:
    cfg.model.n_layers = FLAGS.train_layers
  cfg.data.seq_len = sh.train_seq_len or cfg.data.seq_len
  vocab = config.vocab(cfg)
  batch, sample_len = train_batch(sh, cfg, vocab, cfg.data.seq_len)
  mesh_shape, model_cfg, _ = config.validate(cfg, 1)
  mesh = sharding.make_mesh(mesh_shape, devices=jax.devices()[:1])
  t0 = time.perf_counter()
  # As the trainer does: remat="auto" resolved, and its chosen step is the executable compiled for
  # that (its compile time falls in choose_s, not in the first step).
  model_cfg, fns = functions_for(cfg, mesh, model_cfg)
  choose_s = time.perf_counter() - t0
  steps = FLAGS.train_steps or sh.iters // 2 + 1
  with jax.set_mesh(mesh):
    state = fns.init()
    batch = jax.device_put(batch, fns.batch_sh)
    t0 = time.perf_counter()
    state, m = fns.step(state, batch)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = fns.step(state, batch)
    jax.block_until_ready(m)
    secs = (time.perf_counter() - t0) / steps
  del state
  tokens_per_s = cfg.data.seq_len / secs  # every row token, padding included
  return {"status": "ok", "model.attention": impl, "n_layers": model_cfg.n_layers,
          "remat": model_cfg.remat, "remat_config": cfg.model.remat, "choose_remat_s": choose_s,
          "seq_len": cfg.data.seq_len, "sample_tokens": sample_len, "batch": 1,
          "first_step_s": first, "step_s": secs, "timed_steps": steps,
          "tokens_per_s": tokens_per_s, "sample_tokens_per_s": sample_len / secs,
          "tflops": tokens_per_s * train_flops_per_token(model_cfg, cfg.data.seq_len) / 1e12}


def baseline_and_best(where: str, best: str, run_fn, result: dict, labels, labels_flag: str):
  """{"baseline": run_fn("xla_scan"), "best": run_fn(best)} (those of `labels`, the value of
  --`labels_flag`); an error is recorded, not raised; "best" is skipped where auto resolves to the
  baseline."""
  runs = {}
  for label, impl in (("baseline", "xla_scan"), ("best", best)):
    if label not in labels:
      runs[label] = {"status": "skipped", "reason": f"not in --{labels_flag}"}
      continue
    if label == "best" and impl == "xla_scan":
      runs[label] = {"status": "skipped", "reason": "auto resolves to the baseline"}
      continue
    try:
      run = run_fn(impl)
    except Exception as e:
      run = {"status": "error", "model.attention": impl,
             "error": record_error(result, f"{where}/{label}", e)}
    runs[label] = run
    print(f"{where} {label}: {run}", flush=True)
  return runs


def train_parts_section(sh: Shapes, result: dict) -> dict:
  """The train step's pieces outside the decoder layers, each jitted alone at the train config's
  shapes (batch 1, data.seq_len), in ms: the chunked loss's gradient (its custom VJP computes the
  value in the same pass), the embedding lookup's gradient, and clip + AdamW + apply on the whole
  parameter tree. Their sum against the step's time says where a step's fixed cost goes (1B on an
  H200: ~3.8 s of 5.7 s outside the layers)."""
  del result
  cfg = config.load(sh.train_config)
  mc = config.model_config(cfg)
  length, d, dtype = sh.train_seq_len or cfg.data.seq_len, mc.d_model, jnp.dtype(mc.dtype)
  keys = jax.random.split(jax.random.key(2), 3)
  hidden = jax.random.normal(keys[0], (1, length, d), dtype)
  head = 0.02 * jax.random.normal(keys[1], (d, mc.vocab_size - mc.visual_offset), jnp.float32)
  targets = mc.visual_offset + jax.random.randint(keys[2], (1, length), 0, head.shape[1])
  weights = jnp.ones((1, length), jnp.float32)
  loss_grad = jax.jit(jax.grad(lambda h, w: loss.chunked(
      h, w, targets, weights, visual_offset=mc.visual_offset, chunk=cfg.loss_chunk)[0],
      argnums=(0, 1)))
  table = jnp.zeros((mc.vocab_size, d), jnp.float32)
  ids = targets.astype(jnp.int32)
  embed_grad = jax.jit(jax.grad(lambda t, h: jnp.sum(jnp.take(t, ids, axis=0).astype(dtype) * h)))
  out = {"shapes": {"seq_len": length, "d_model": d, "visual_size": head.shape[1],
                    "dtype": mc.dtype, "loss_chunk": cfg.loss_chunk}}
  for name, f, args in (("loss_grad", loss_grad, (hidden, head)),
                        ("embedding_grad", embed_grad, (table, hidden))):
    secs, first = timed(f, *args, iters=sh.iters)
    out[name] = {"ms": 1e3 * secs, "first_call_s": first}
  del hidden, head, table
  params = jax.jit(lambda: model_lib.init_model(mc, 0)[1])()  # made on the device
  tx = optim.make(cfg.optim, cfg.steps)
  opt = jax.jit(tx.init)(params)
  update = jax.jit(lambda p, o: optax_apply(tx, p, o), donate_argnums=(0, 1))
  secs, first = timed(update, params, opt, iters=sh.iters, chain=True)
  out["optimizer_update"] = {"ms": 1e3 * secs, "first_call_s": first,
                             "parameters": int(sum(x.size for x in jax.tree.leaves(params)))}
  print(f"train parts: {out}", flush=True)
  return out


def optax_apply(tx, params, opt):
  """One clip + AdamW update with the parameters themselves as gradients (the cost is the same)."""
  updates, opt = tx.update(params, opt, params)
  return optax.apply_updates(params, updates), opt


def train_section(sh: Shapes, result: dict) -> dict:
  """Baseline xla_scan and the best resolvable path; MFU against measured and reference peaks."""
  best = attention.resolve("auto", plan_available=False)
  matmul = result.get("throughput", {}).get("matmul", {}).get("tflops")

  def run_with_mfu(impl):
    run = train_run(sh, impl)
    run["mfu_vs_measured_matmul"] = run["tflops"] / matmul if matmul else None
    run["mfu_vs_reference"] = run["tflops"] / FLAGS.reference_tflops
    return run

  return {"config": sh.train_config, "best": best,
          "flop_model": "lumos_jax.train.metrics.train_flops_per_token (3 x forward, seq_len/2 "
          "keys per token, no remat)", "remat": "the config's; 'auto' resolved by "
          "train.step.functions_for against the device's memory, as the trainer does (or "
          "--train_remat); under 'auto' the step compiles inside choose_remat_s",
          "plan": "none: the train step passes no attention plan",
          "layers_note": (f"--train_layers={FLAGS.train_layers} instead of the config's"
                          if FLAGS.train_layers else "the config's layers"),
          "runs": baseline_and_best("train_step", best, run_with_mfu, result,
                                    FLAGS.train_runs, "train_runs")}


# ---------------------------------------------------------------- sampling


def sample_run(sh: Shapes, impl: str) -> dict:
  """generate.py's KV-cache path with model.attention = impl: two passes, s/frame."""
  frames, h, w, steps, scale = sh.sample_video
  default_steps = steps if FLAGS.smoke else min(steps, 10)  # 10 of 50: the lease is short
  frames, steps = FLAGS.sample_frames or frames, FLAGS.sample_steps or default_steps
  cfg = config.load(sh.sample_config)
  cfg.model.attention = impl
  vocab = config.vocab(cfg)
  model = Decoder(config.model_config(cfg), rngs=nnx.Rngs(0))
  sampler = sample.Sampler(model, vocab, strides=tuple(cfg.data.get("strides",
                                                                    tokens.LUMOS_STRIDES)))
  sc = sample.SampleConfig(frames=frames, height=h, width=w, fps=4, duration=2, steps=steps,
                           cfg_scale=scale,
                           code_limit=(sample.synthetic_tokenizer(cfg).n_codes
                                       if cfg.data.kind == "synthetic" else 0))
  text = text_ids(vocab, sh.text_len)
  p = sample.plan(vocab, text, sc, strides=sampler.strides)
  clock = generate.CompileClock()
  clock.take()
  t0 = time.perf_counter()
  sampler.generate(text, sc, cached=True)
  jax.effects_barrier()
  wall, compile_s = time.perf_counter() - t0, clock.take()
  t0 = time.perf_counter()
  sampler.generate(text, sc, cached=True)  # returns host numpy: finished
  per_frame = (time.perf_counter() - t0) / frames
  flops = np.mean([generate.useful_flops_per_frame(sampler.cfg, p.prefix, p.block, f, steps, True)
                   for f in range(frames)])
  full_steps = sh.sample_video[3]
  return {"status": "ok", "model.attention": impl, "frames": frames, "steps": steps,
          "latents": [h, w], "cfg_scale": scale, "tokens_per_block": p.block,
          "sequence": p.prefix + frames * p.block, "first_pass_s": wall,
          "first_pass_compile_s": compile_s, "first_pass_s_per_frame": (wall - compile_s) / frames,
          "s_per_frame": per_frame, "useful_tflops": flops / per_frame / 1e12,
          "s_per_frame_at_full_steps": per_frame * full_steps / steps,
          "extrapolated": steps != full_steps}


def sampling_section(sh: Shapes, result: dict) -> dict:
  best = attention.resolve("auto", plan_available=False)
  return {"config": sh.sample_config, "timing": "second pass (compilations reused); first pass "
          "wall - compile beside it; s_per_frame_at_full_steps scales by full/used steps",
          "runs": baseline_and_best("sampling", best, lambda impl: sample_run(sh, impl), result,
                                    FLAGS.sample_runs, "sample_runs")}


# ---------------------------------------------------------------- main

RUNNERS = {"versions": versions_section, "throughput": throughput_section,
           "attention": attention_section, "cache_attention": cache_section,
           "train_parts": train_parts_section, "train_step": train_section,
           "sampling": sampling_section}


def write(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
  os.replace(path + ".tmp", path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: accelerator.py takes --flags only")
  unknown = sorted(set(FLAGS.sections) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
  sh = smoke() if FLAGS.smoke else full()
  result = {"mode": "smoke" if FLAGS.smoke else "full", "shapes": dataclasses.asdict(sh),
            "errors": []}
  t_start = time.perf_counter()
  for name in SECTIONS:
    t0 = time.perf_counter()
    if name not in FLAGS.sections:
      result[name] = {"status": "skipped", "reason": "not in --sections"}
    else:
      try:
        result[name] = RUNNERS[name](sh, result)
        result[name]["seconds"] = time.perf_counter() - t0
      except Exception as e:
        result[name] = {"status": "error", "error": record_error(result, name, e)}
    result["seconds"] = time.perf_counter() - t_start
    write(result, FLAGS.out)
  print(f"wrote {os.path.abspath(FLAGS.out)} ({result['seconds']:.0f} s, "
        f"{len(result['errors'])} errors)", flush=True)
  return 1 if result["errors"] else 0


if __name__ == "__main__":
  app.run(main)
