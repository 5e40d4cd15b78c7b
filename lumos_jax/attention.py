"""Layout-driven attention: query q attends keys k with k_start[q] <= k < k_end[q].

One entry point, `attend`, selects an implementation by name:
  dense: the reference; builds the [Lq, Lk] boolean mask and computes every (q, k) pair.
  xla:   query blocks of `block_q` tokens, block i attending only the key prefix it can reach,
         [0, end_i + max_lookahead). Block-causal attention lets a query see at most
         `max_lookahead` keys after itself (the rest of its frame block), so this is exact for every
         layout with `Layout.max_lookahead <= max_lookahead`, never builds an L x L mask, and skips
         the fully masked upper triangle: for a 7 x 4,084-token video it executes ~1.1x the FLOPs of
         the allowed pairs where dense executes ~1.75x (benchmarks/core.py).
GPU (tokamax, per-query key ranges) and TPU (splash, computable masks) kernels slot in as further
names in `IMPLEMENTATIONS`; both consume the same (k_start, k_end).

Shapes: q [B, Lq, Hq, D]; k, v [B, Lk, Hkv, D] with Hq a multiple of Hkv (GQA); k_start, k_end
int32 [B, Lq] in key indices. Returns [B, Lq, Hq, D] in q's dtype. Softmax in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: an empty row gives no NaN


def _masked_softmax_attention(q, k, v, allowed):
  """q [B,Lq,Hq,D], k/v [B,Lk,Hkv,D], allowed bool [B,Lq,Lk] -> [B,Lq,Hq,D]."""
  b, lq, hq, d = q.shape
  hkv = k.shape[2]
  qg = q.reshape(b, lq, hkv, hq // hkv, d)
  logits = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k, preferred_element_type=jnp.float32)
  logits = logits * (d ** -0.5)
  logits = jnp.where(allowed[:, None, None], logits, _NEG)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, lq, hq, d).astype(q.dtype)


def _allowed(k_start, k_end, key_lo: int, key_hi: int):
  """bool [B, Lq, key_hi - key_lo]: which keys of the window [key_lo, key_hi) each query sees."""
  key = jnp.arange(key_lo, key_hi, dtype=jnp.int32)
  return (key >= k_start[..., None]) & (key < k_end[..., None])


def dense(q, k, v, k_start, k_end, **unused):
  """Reference: every (q, k) pair, an explicit [B, Lq, Lk] mask."""
  del unused
  return _masked_softmax_attention(q, k, v, _allowed(k_start, k_end, 0, k.shape[1]))


def xla_blocked(q, k, v, k_start, k_end, *, block_q: int = 256, max_lookahead: int, **unused):
  """Query blocks against their reachable key prefix (self-attention: query i is key i)."""
  del unused
  lq, lk = q.shape[1], k.shape[1]
  if lq != lk:
    raise ValueError(f"xla_blocked is self-attention over one sequence: got {lq} queries, {lk} keys")
  # Each block's [heads, block_q, keys] probabilities are recomputed in the backward pass rather
  # than kept: memory stays O(block_q x L) instead of O(L^2) (as flash attention does).
  block = jax.checkpoint(lambda q, k, v, s, e: _masked_softmax_attention(
      q, k, v, _allowed(s, e, 0, k.shape[1])))
  outs = []
  for lo in range(0, lq, block_q):
    hi = min(lq, lo + block_q)
    key_hi = min(lk, hi + max_lookahead)
    outs.append(block(q[:, lo:hi], k[:, :key_hi], v[:, :key_hi], k_start[:, lo:hi], k_end[:, lo:hi]))
  return jnp.concatenate(outs, axis=1)


IMPLEMENTATIONS = {"dense": dense, "xla": xla_blocked}


def check_lookahead(layout_lookahead: int, max_lookahead: int) -> None:
  """Host-side guard for the "xla" path: a layout whose frames reach further ahead than the
  configured `model.max_lookahead` would silently lose keys, so refuse it before running."""
  if layout_lookahead > max_lookahead:
    raise ValueError(f"a frame block reaches {layout_lookahead} keys ahead of its first query, more "
                     f"than model.max_lookahead={max_lookahead}: raise model.max_lookahead to at "
                     f"least the longest frame block - 1 (4 + H * (W + 1) - 1 tokens)")


def attend(q, k, v, k_start, k_end, *, impl: str = "xla", **options):
  """Attention under the (k_start, k_end) key ranges with the named implementation.

  `options` go to the implementation (`block_q`, `max_lookahead` for "xla"). Non-self-attention
  calls (queries against a KV cache, Lq != Lk) use "dense": the query block is one frame.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {impl!r}; known: {sorted(IMPLEMENTATIONS)}")
  if q.shape[1] != k.shape[1]:
    impl = "dense"
  return IMPLEMENTATIONS[impl](q, k, v, k_start, k_end, **options)
