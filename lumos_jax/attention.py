"""Layout-driven attention: query q attends keys k with k_start[q] <= k < k_end[q].

One entry point, `attend`, selects an implementation by name:
  dense: the reference; builds the [Lq, Lk] boolean mask and computes every (q, k) pair.
  xla:   query blocks of `block_q` tokens, block i attending only the key prefix it can reach,
         [0, end_i + max_lookahead). Block-causal attention lets a query see at most
         `max_lookahead` keys after itself (the rest of its frame block), so this is exact for every
         layout with `Layout.max_lookahead <= max_lookahead`, never builds an L x L mask, and skips
         the fully masked upper triangle: for a 7 x 4,084-token video it executes ~1.1x the FLOPs of
         the allowed pairs where dense executes ~1.75x (benchmarks/core.py). Its backward pass is
         flash attention's: a block keeps its output and log-sum-exp, not its probabilities.
Fused kernels (each needs its optional dependency or backend; `available(name)` says):
  tokamax:       tokamax flash attention with our per-query key ranges, whole sequence in one call.
  tokamax_bands: tokamax once per band of the attention plan (masked blocks skipped in the
                 backward pass too).
  cudnn_bands:   cuDNN flash attention once per band.
  splash:        Pallas splash attention with the plan's mask (TPU; interpret mode elsewhere).
  auto:          the best of these for the backend (`resolve`).
The band-wise kernels need a static `attention_plan.AttentionPlan` (`plan=`), derived on the host
from a concrete batch; see lumos_jax/attention_plan.py. Cache attention (queries against a KV
cache, Lq != Lk) has its own table, `CACHE_IMPLEMENTATIONS`: dense, tokamax, cudnn.

Shapes: q [B, Lq, Hq, D]; k, v [B, Lk, Hkv, D] with Hq a multiple of Hkv (GQA); k_start, k_end
int32 [B, Lq] in key indices. Returns [B, Lq, Hq, D] in q's dtype. Softmax in float32.
"""
from __future__ import annotations

import functools
import importlib.util
import logging

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.ad_checkpoint import checkpoint_name

from lumos_jax import attention_kernels, sharding
from lumos_jax.attention_kernels import key_range_mask

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: an empty row gives no NaN


def _heads_major(q, k, v):
  """q [B, L, Hq, D] -> [B, Hkv, G, L, D]; k, v [B, L, Hkv, D] -> [B, Hkv, L, D].

  GQA: query head h * G + g (G = Hq // Hkv) reads key/value head h. The blocked paths transpose
  once per call and slice blocks from the result: per-block transposes of the key prefix, and the
  transposing copies XLA adds around [B, L, H, D] matmuls, made bench_small's attention ~2x slower
  on CPU (2026-11-29, README "Rematerialisation").
  """
  qh = rearrange(q, "b q (h g) d -> b h g q d", h=k.shape[2])
  return qh, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)


def _tokens_major(out):
  """[B, Hkv, G, L, D] -> [B, L, Hq, D], the inverse of `_heads_major` for q."""
  return rearrange(out, "b h g q d -> b q (h g) d")


def _heads_major_attention(qh, kh, vh, allowed):
  """qh [B, Hkv, G, Lq, D], kh/vh [B, Hkv, Lk, D], allowed bool [B, Lq, Lk] -> [B, Hkv, G, Lq, D].

  The G query heads of one key/value head are stacked as rows of one matmul per (B, Hkv): a plain
  batched matmul, where a separate group axis costs XLA extra layout copies in the backward pass.
  Softmax in float32; matmuls accumulate in float32. The dense reference; the blocked paths use
  `_flash_attention` (the same values, a cheaper backward pass).
  """
  b, h, g, lq, d = qh.shape
  probs = jax.nn.softmax(_masked_logits(qh.reshape(b, h, g * lq, d), kh, allowed, g),
                         axis=-1).astype(vh.dtype)
  out = jnp.einsum("bhqk,bhkd->bhqd", probs, vh, preferred_element_type=jnp.float32)
  return out.reshape(b, h, g, lq, d).astype(qh.dtype)


def _masked_logits(rows, kh, allowed, groups):
  """Scaled float32 logits [B, Hkv, G * Lq, Lk] of `rows` [B, Hkv, G * Lq, D] against kh, with
  disallowed pairs at _NEG (`allowed` [B, Lq, Lk] repeated for the G heads of a group)."""
  logits = jnp.einsum("bhqd,bhkd->bhqk", rows, kh, preferred_element_type=jnp.float32)
  logits = logits * (rows.shape[-1] ** -0.5)
  return jnp.where(jnp.tile(allowed, (1, groups, 1))[:, None], logits, _NEG)


@jax.custom_vjp
def _flash_attention(qh, kh, vh, k_start, k_end):
  """`_heads_major_attention`'s contract and values (up to rounding), with flash attention's
  backward pass.

  The forward keeps only its output and each row's log-sum-exp; the backward recomputes the
  probabilities in one pass from the logits and the log-sum-exp, and takes the softmax's row term
  from the output (sum(dO * O) over D) instead of sum(P * dP) over the keys. Autodiff through
  `jax.nn.softmax` reruns max, exp, sum and divide over [heads, Lq, Lk] and reduces P * dP: on CPU
  those passes cost as much as the attention's matmuls. The output is normalised after the PV
  matmul ([Lq, D], not [Lq, Lk]). The mask is rebuilt from k_start/k_end [B, Lq] in both passes,
  so the residuals hold no [Lq, Lk] array.
  """
  return _flash_forward(qh, kh, vh, k_start, k_end)[0]


def _flash_forward(qh, kh, vh, k_start, k_end):
  """(output, residuals): the residuals are the inputs, the output and log-sum-exp [B, Hkv,
  G * Lq, 1] (float32)."""
  b, h, g, lq, d = qh.shape
  allowed = key_range_mask(k_start, k_end, kh.shape[2])
  logits = _masked_logits(qh.reshape(b, h, g * lq, d), kh, allowed, g)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  unnormalised = jnp.exp(logits - row_max)
  row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
  out = jnp.einsum("bhqk,bhkd->bhqd", unnormalised.astype(vh.dtype), vh,
                   preferred_element_type=jnp.float32) / row_sum
  # Named so the remat policies that keep the attention output keep these too: without them the
  # backward pass would rerun this whole forward, PV matmul included.
  out = checkpoint_name(out.reshape(qh.shape).astype(qh.dtype), "attn_out")
  log_sum_exp = checkpoint_name(row_max + jnp.log(row_sum), "attn_out")
  return out, (qh, kh, vh, k_start, k_end, out, log_sum_exp)


def _flash_backward(residuals, d_out):
  """Cotangents of (qh, kh, vh, k_start, k_end) from d_out [B, Hkv, G, Lq, D] (none for the
  integer key ranges)."""
  qh, kh, vh, k_start, k_end, out, log_sum_exp = residuals
  b, h, g, lq, d = qh.shape
  rows = qh.reshape(b, h, g * lq, d)
  d_rows = d_out.reshape(rows.shape)
  allowed = key_range_mask(k_start, k_end, kh.shape[2])
  probs = jnp.exp(_masked_logits(rows, kh, allowed, g) - log_sum_exp)
  d_v = jnp.einsum("bhqk,bhqd->bhkd", probs.astype(vh.dtype), d_rows.astype(vh.dtype),
                   preferred_element_type=jnp.float32)
  d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_rows.astype(vh.dtype), vh,
                       preferred_element_type=jnp.float32)
  row_term = jnp.sum(d_rows.astype(jnp.float32) * out.reshape(rows.shape).astype(jnp.float32),
                     axis=-1, keepdims=True)
  d_logits = (probs * (d_probs - row_term) * d ** -0.5).astype(kh.dtype)
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_logits, kh, preferred_element_type=jnp.float32)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_logits, rows, preferred_element_type=jnp.float32)
  return (d_q.reshape(qh.shape).astype(qh.dtype), d_k.astype(kh.dtype), d_v.astype(vh.dtype),
          None, None)


_flash_attention.defvjp(_flash_forward, _flash_backward)


def _masked_softmax_attention(q, k, v, allowed):
  """q [B,Lq,Hq,D], k/v [B,Lk,Hkv,D], allowed bool [B,Lq,Lk] -> [B,Lq,Hq,D]."""
  return _tokens_major(_heads_major_attention(*_heads_major(q, k, v), allowed))


def dense(q, k, v, k_start, k_end, **unused):
  """Reference: every (q, k) pair, an explicit [B, Lq, Lk] mask."""
  del unused
  return _masked_softmax_attention(q, k, v, key_range_mask(k_start, k_end, k.shape[1]))


def xla_blocked(q, k, v, k_start, k_end, *, block_q: int = 256, max_lookahead: int,
                remat_blocks: bool = True, **unused):
  """Query blocks against their reachable key prefix (self-attention: query i is key i).
  `remat_blocks=True` reruns each block's forward in the backward pass (see below)."""
  del unused
  lq, lk = q.shape[1], k.shape[1]
  if lq != lk:
    raise ValueError(f"xla_blocked is self-attention over one sequence: got {lq} queries, "
                     f"{lk} keys")
  # Each block keeps only its output and log-sum-exp for the backward pass (`_flash_attention`),
  # never its [heads, block_q, keys] probabilities. remat_blocks drops those too and reruns the
  # block's forward; a layer rematerialised as a whole reruns it anyway, so only the least-memory
  # policy ("full") asks for both.
  block = jax.checkpoint(_window_attention) if remat_blocks else _window_attention
  qh, kh, vh = _heads_major(q, k, v)
  outs = []
  for lo in range(0, lq, block_q):
    hi = min(lq, lo + block_q)
    key_hi = min(lk, hi + max_lookahead)
    outs.append(block(kh[:, :, :key_hi], vh[:, :, :key_hi],
                      (qh[:, :, :, lo:hi], k_start[:, lo:hi], k_end[:, lo:hi])))
  return _tokens_major(jnp.concatenate(outs, axis=3))


def _window_attention(kh, vh, block):
  """One query block against a key window starting at key 0: `block` = (qh [B, Hkv, G, block_q,
  D], k_start, k_end int32 [B, block_q]); kh, vh [B, Hkv, window, D]. Returns qh's shape."""
  qh, k_start, k_end = block
  return _flash_attention(qh, kh, vh, k_start, k_end)


def xla_scan(q, k, v, k_start, k_end, *, block_q: int = 256, max_lookahead: int,
             scan_groups: int = 16, remat_blocks: bool = True, **unused):
  """Memory-bounded variant of `xla_blocked` for long-sequence training.

  The query blocks are split into `scan_groups` consecutive groups; a group's blocks run one after
  another (`lax.map`, each rematerialised) against the key prefix its last block reaches. Peak
  memory is one block's [heads, block_q, keys] temporaries however long the sequence, where the
  unrolled `xla_blocked` leaves XLA free to keep every block's alive at once. The price is the
  group's shared key window: executed pairs are `scan_pairs()` (e.g. ~1.18x the allowed pairs for
  7 x 4,084-token frames with 16 groups). XLA's cost analysis counts a loop body once, so use
  `scan_pairs` for this path's FLOPs.
  """
  del unused
  lq, lk = q.shape[1], k.shape[1]
  if lq != lk:
    raise ValueError(f"xla_scan is self-attention over one sequence: got {lq} queries, {lk} keys")
  pad = -lq % block_q
  n_blocks = (lq + pad) // block_q
  # Padded query rows attend key 0 only; their outputs are dropped below.
  q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
  k_start = jnp.pad(k_start, ((0, 0), (0, pad)))
  k_end = jnp.pad(k_end, ((0, 0), (0, pad)), constant_values=1)

  def blocks(x, lo, hi):  # [B, L, ...] -> [n, B, block_q, ...] for query blocks lo..hi-1
    return rearrange(x[:, lo * block_q:hi * block_q], "b (n q) ... -> n b q ...", q=block_q)

  def q_blocks(qh, lo, hi):  # [B, Hkv, G, L, D] -> [n, B, Hkv, G, block_q, D]
    return rearrange(qh[:, :, :, lo * block_q:hi * block_q], "b h g (n q) d -> n b h g q d",
                     q=block_q)

  qh, kh, vh = _heads_major(q, k, v)
  outs = []
  for lo, hi in _groups(n_blocks, scan_groups):
    key_hi = min(lk, hi * block_q + max_lookahead)
    # partial binds this group's key window into the body; a closure would read the loop
    # variables whenever it happens to be called.
    one = functools.partial(_window_attention, kh[:, :, :key_hi], vh[:, :, :key_hi])
    one = jax.checkpoint(one) if remat_blocks else one
    out = jax.lax.map(one, (q_blocks(qh, lo, hi), blocks(k_start, lo, hi), blocks(k_end, lo, hi)))
    outs.append(rearrange(out, "n b h g q d -> b h g (n q) d"))
  return _tokens_major(jnp.concatenate(outs, axis=3))[:, :lq]


def _groups(n_blocks: int, n_groups: int):
  """Consecutive [lo, hi) ranges of query blocks, as even as possible."""
  edges = [round(i * n_blocks / n_groups) for i in range(n_groups + 1)]
  return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def scan_pairs(length: int, *, block_q: int, max_lookahead: int, scan_groups: int = 16) -> int:
  """(q, k) pairs `xla_scan` computes for a `length`-token sequence (padding rows excluded)."""
  total = 0
  for lo, hi in _groups(-(-length // block_q), scan_groups):
    rows = min(length, hi * block_q) - lo * block_q
    total += rows * min(length, hi * block_q + max_lookahead)
  return total


def splash(q, k, v, k_start, k_end, **options):
  """Pallas splash attention (lumos_jax/attention_splash.py; imported on first use)."""
  from lumos_jax import attention_splash
  return attention_splash.splash(q, k, v, k_start, k_end, **options)


IMPLEMENTATIONS = {"dense": dense, "xla": xla_blocked, "xla_scan": xla_scan,
                   "tokamax": attention_kernels.tokamax_attention,
                   "tokamax_bands": attention_kernels.tokamax_bands,
                   "cudnn_bands": attention_kernels.cudnn_bands, "splash": splash}
CACHE_IMPLEMENTATIONS = {"dense": dense, "tokamax": attention_kernels.tokamax_attention,
                         "cudnn": attention_kernels.cudnn_cache}
_XLA_NATIVE = (dense, xla_blocked, xla_scan)
NEEDS_PLAN = frozenset({"tokamax_bands", "cudnn_bands", "splash"})
NAMES = frozenset(IMPLEMENTATIONS) | {"auto"}
# model.attention: the trainer and sampler pass no plan yet (their batches' band grids are not
# static), so the band-wise kernels are reachable through attend(plan=) / Decoder(plan=) only.
MODEL_NAMES = NAMES - NEEDS_PLAN


def available(name: str, backend: str | None = None) -> tuple[bool, str]:
  """(usable here, why not): an implementation's dependency and backend requirements."""
  backend = backend or jax.default_backend()
  if name.startswith("tokamax") and importlib.util.find_spec("tokamax") is None:
    return False, "tokamax is not installed (pip install 'lumos_jax[gpu]' or tokamax==0.0.17)"
  if name.startswith("cudnn") and backend != "gpu":
    return False, f"cuDNN needs a GPU (backend {backend!r}); its XLA form is for tests"
  if name == "splash" and backend != "tpu":
    return False, f"splash is a TPU kernel (backend {backend!r}); interpret mode is for tests"
  return True, ""


@functools.cache
def resolve(name: str, backend: str | None = None, plan_available: bool = False) -> str:
  """The implementation `name` stands for: itself, or for "auto" the fastest usable one.

  auto: GPU -> tokamax_bands with a plan, else tokamax; without tokamax, cudnn_bands with a plan,
  else xla. TPU -> splash with a plan, else xla. CPU -> xla. A missing optional dependency logs
  one line and falls back; it is never an error.
  """
  if name != "auto":
    return name
  backend = backend or jax.default_backend()
  preferred = {"gpu": ["tokamax_bands", "tokamax", "cudnn_bands"], "tpu": ["splash"]}
  for candidate in preferred.get(backend, []):
    if candidate in NEEDS_PLAN and not plan_available:
      continue
    ok, why = available(candidate, backend)
    if ok:
      return candidate
    logging.getLogger(__name__).info("attention auto: not %s (%s)", candidate, why)
  return "xla"


def check_lookahead(layout_lookahead: int, max_lookahead: int) -> None:
  """Host-side guard for the "xla" path: a layout whose frames reach further ahead than the
  configured `model.max_lookahead` would silently lose keys, so refuse it before running."""
  if layout_lookahead > max_lookahead:
    raise ValueError(f"a frame block reaches {layout_lookahead} keys ahead of its first query, "
                     f"more than model.max_lookahead={max_lookahead}: raise model.max_lookahead "
                     f"to at least {layout_lookahead} (an H x W frame needs "
                     "tokens.frame_block_length(H, W) - 1)")


def _cache_impl(impl: str):
  """The cache form of a self-attention name. cudnn's cache form assumes one key range per row
  (a decoding step), which a prefill breaks, so only an explicit impl="cudnn" gets it."""
  if impl in CACHE_IMPLEMENTATIONS:
    return CACHE_IMPLEMENTATIONS[impl]
  return CACHE_IMPLEMENTATIONS["tokamax"] if impl == "tokamax_bands" else dense


def attend(q, k, v, k_start, k_end, *, impl: str = "xla", plan=None, **options):
  """Attention under the (k_start, k_end) key ranges with the named implementation.

  Self-attention (Lq == Lk) uses `IMPLEMENTATIONS[impl]`; `plan` (a static AttentionPlan of this
  batch) is required by the band-wise kernels and ignored by the rest. Queries against a KV cache
  (Lq != Lk) use `CACHE_IMPLEMENTATIONS[impl]` (tokamax_bands: tokamax), else "dense".
  `options` go to the implementation (`block_q`, `max_lookahead` for "xla"; `kernel_backend` for
  the fused kernels, default from the platform).
  """
  impl = resolve(impl, None, plan is not None)
  if q.shape[1] != k.shape[1]:
    fn = _cache_impl(impl)
  elif impl in IMPLEMENTATIONS:
    fn = IMPLEMENTATIONS[impl]
    options = dict(options, plan=plan) if impl in NEEDS_PLAN else options
  else:
    raise ValueError(f"unknown attention implementation {impl!r}; known: {sorted(NAMES)}")
  call = functools.partial(fn, **options)
  if fn in _XLA_NATIVE:  # XLA partitions these itself
    return call(q, k, v, k_start, k_end)
  return sharding.per_shard(call, q, k, v, k_start, k_end)
