"""Fused GPU attention behind `attention.attend`: tokamax (per-query key ranges), cuDNN (per band).

Both follow the contract of `lumos_jax.attention` (q [B, Lq, Hq, D]; k, v [B, Lk, Hkv, D];
k_start, k_end int32 [B, Lq]; output [B, Lq, Hq, D] in q's dtype).

tokamax (optional dependency, the `gpu` extra) takes our key ranges as they are:
`Mask(k_start=, k_end=)`. Its Mosaic-GPU kernel skips fully masked key blocks in the forward pass
but not in the backward pass over a whole block-causal sequence (measured ~1.02x and ~1.79x the
allowed pairs); called once per band of the attention plan, with the band's key prefix, it skips in
both (~1.03x). `kernel_backend` picks tokamax's implementation: "mosaic" on GPU/TPU, "xla" (the
same mask semantics in plain XLA) elsewhere; the CPU tests use "xla".

cuDNN (`jax.nn.dot_product_attention(implementation="cudnn")`) knows no per-query key ranges, only
causal / unmasked / padded modes with keys starting at 0. Per band of the plan: a frame band whose
rows start at key 0 is unmasked attention over its key prefix; the text band at query 0 is causal;
any other band (left pads, packed rows, the causal tail after the first band) gets an explicit
boolean mask of its key ranges, exact but not skipped. `kernel_backend="xla"` runs the same
decomposition in XLA (the CPU tests).
"""
from __future__ import annotations

import importlib
import sys
import types

import jax
import jax.numpy as jnp

from lumos_jax.attention_plan import AttentionPlan, Band


def default_backend(kind: str) -> str:
  """The kernel backend for `kind` ("tokamax" | "cudnn") on the current JAX platform."""
  platform = jax.default_backend()
  if kind == "tokamax":
    return "mosaic" if platform in ("gpu", "tpu") else "xla"
  return "cudnn" if platform == "gpu" else "xla"


def import_tokamax():
  """tokamax's attention modules (api, base). tokamax imports `xprof` at load only for its own
  benchmarking; where xprof is absent (a bare GPU image) a stub module stands in for it."""
  try:
    importlib.import_module("xprof.cli.tools")
  except ImportError:
    for name in ("xprof", "xprof.cli", "xprof.cli.tools"):
      sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["xprof.cli.tools"].get_kernel_stats_tool = None
  api = importlib.import_module("tokamax._src.ops.attention.api")
  base = importlib.import_module("tokamax._src.ops.attention.base")
  return api, base


def _tokamax_call(q, k, v, k_start, k_end, kernel_backend):
  api, base = import_tokamax()
  impl = kernel_backend
  if impl == "mosaic":
    impl = "mosaic_gpu" if jax.default_backend() == "gpu" else "mosaic_tpu"
  mask = base.Mask(k_start=k_start[:, None], k_end=k_end[:, None])  # [B, 1 (heads), Lq]
  out = api.IMPLEMENTATIONS[impl](q, k, v, bias=None, mask=mask, logits_scale=base.AUTO,
                                  precision=None, logits_soft_cap=None, q_sharding=None)
  return out.astype(q.dtype)


def tokamax_attention(q, k, v, k_start, k_end, *, kernel_backend: str | None = None, **unused):
  """The whole query range in one tokamax call (self- or cache attention; no plan needed)."""
  del unused
  return _tokamax_call(q, k, v, k_start, k_end, kernel_backend or default_backend("tokamax"))


def per_band(band_fn, q, k, v, k_start, k_end, plan: AttentionPlan):
  """Self-attention band by band: `band_fn(band, q_band, k_prefix, v_prefix, k_start_band,
  k_end_band)` for every band of `plan`, outputs concatenated in query order."""
  if plan is None:
    raise ValueError("this attention implementation needs an attention plan (plan=): derive one "
                     "on the host with attention_plan.plan_of(k_start, k_end)")
  if not q.shape[1] == k.shape[1] == plan.length:
    raise ValueError(f"plan covers {plan.length} tokens; got {q.shape[1]} queries and "
                     f"{k.shape[1]} keys")
  outs = [band_fn(b, q[:, b.lo:b.hi], k[:, :b.key_hi], v[:, :b.key_hi], k_start[:, b.lo:b.hi],
                  k_end[:, b.lo:b.hi]) for b in plan.bands]
  return jnp.concatenate(outs, axis=1)


def tokamax_bands(q, k, v, k_start, k_end, *, plan: AttentionPlan | None = None,
                  kernel_backend: str | None = None, **unused):
  """tokamax once per band, each band against its key prefix: masked blocks are skipped in the
  backward pass too."""
  del unused
  backend = kernel_backend or default_backend("tokamax")
  return per_band(lambda b, *xs: _tokamax_call(*xs, backend), q, k, v, k_start, k_end, plan)


def _cudnn_band(band: Band, q, k, v, k_start, k_end, backend):
  """One band through jax.nn.dot_product_attention; see the module docstring for the modes.

  Every call has even query and key lengths. cuDNN refuses a biased training call of odd length,
  and JAX 0.11.2 passes a zero-size bias placeholder where there is no bias, so its check refuses
  every odd training call: "Unsupported sequence length Q 85, KV 85" on an H200 for the causal
  text band (80 text tokens + header). A padded query's output is dropped; a padded key lies
  after every real query of a top-left causal band, and is cut off by key_value_seq_lengths in an
  unmasked one."""
  if not (band.from_zero and (not band.causal or band.lo == 0)):
    return _cudnn_masked_band(q, k, v, k_start, k_end, backend)
  lq, lk = q.shape[1], k.shape[1]
  q, k, v = _pad_to_even(q), _pad_to_even(k), _pad_to_even(v)
  if band.causal:  # queries [0, hi) against keys [0, key_hi): top-left causal
    mode = {"is_causal": True}
  elif lk % 2:
    mode = {"key_value_seq_lengths": jnp.full((q.shape[0],), lk, jnp.int32)}
  else:
    mode = {}
  out = jax.nn.dot_product_attention(q, k, v, implementation=backend, **mode)
  return out[:, :lq].astype(q.dtype)


def _pad_to_even(x, value=0):
  """x [B, L, ...] with one `value` row appended along L where L is odd."""
  return jnp.pad(x, [(0, 0), (0, x.shape[1] % 2)] + [(0, 0)] * (x.ndim - 2),
                 constant_values=value)


def key_range_mask(k_start, k_end, n_keys: int):
  """bool [B, Lq, n_keys]: which of keys 0..n_keys-1 each query sees (query i of row b sees keys
  [k_start[b, i], k_end[b, i])). The one dense form of the key-range contract:
  the reference attention and every kernel that takes an explicit mask build it here."""
  key = jnp.arange(n_keys, dtype=jnp.int32)
  return (key >= k_start[..., None]) & (key < k_end[..., None])


def _cudnn_masked_band(q, k, v, k_start, k_end, backend):
  """A band with an explicit [B, 1, Lq, keys] mask, padded to even lengths (`_cudnn_band`): the
  extra key is masked for every query, the extra query attends key 0 and its output is dropped."""
  lq = q.shape[1]
  q, k, v = _pad_to_even(q), _pad_to_even(k), _pad_to_even(v)
  k_start, k_end = _pad_to_even(k_start), _pad_to_even(k_end, 1)
  mask = key_range_mask(k_start, k_end, k.shape[1])  # [B, Lq, keys]
  out = jax.nn.dot_product_attention(q, k, v, implementation=backend, mask=mask[:, None])
  return out[:, :lq].astype(q.dtype)


def cudnn_bands(q, k, v, k_start, k_end, *, plan: AttentionPlan | None = None,
                kernel_backend: str | None = None, **unused):
  """cuDNN flash attention once per band of the plan (XLA's attention with kernel_backend="xla")."""
  del unused
  backend = kernel_backend or default_backend("cudnn")
  return per_band(lambda b, *xs: _cudnn_band(b, *xs, backend), q, k, v, k_start, k_end, plan)


def cudnn_cache(q, k, v, k_start, k_end, *, kernel_backend: str | None = None, **unused):
  """A frame block of queries against a KV cache, one cuDNN call per row.

  Precondition (a sampler decoding step): within a row, every query has the same key range
  [k_start, k_end), as a frame block has. Each row's keys are shifted so its range starts at key 0
  and its length goes to cuDNN as `key_value_seq_lengths`. Rows that break the precondition
  (a prefill over text) must use another implementation.
  """
  del unused
  backend = kernel_backend or default_backend("cudnn")
  start, end = k_start[:, 0], k_end[:, 0]

  def shift(x, s):  # keys [s, s + Lk) of x padded with Lk zero keys: range start moves to 0
    padded = jnp.concatenate([x, jnp.zeros_like(x)], axis=0)
    return jax.lax.dynamic_slice_in_dim(padded, s, x.shape[0], axis=0)

  k = jax.vmap(shift)(k, start)
  v = jax.vmap(shift)(v, start)
  out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=(end - start).astype(jnp.int32),
                                     implementation=backend)
  return out.astype(q.dtype)
