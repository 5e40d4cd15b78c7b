"""AR-DF training loss: cross-entropy on masked visual slots over the vocabulary's visual slice.

LUMOS_REFERENCE.md section 3.9: no shift (position i's hidden state predicts the token at i), only
slots with weight > 0 count (the pipeline sets weight 1 on masked visual code slots), softmax over
the visual ids [visual_offset, visual_offset + visual_size) only, token mean over the whole batch.

`chunked` never materialises [L, vocab] logits: it scans over chunks of `chunk` positions, and
its gradient is computed in the same pass (a custom VJP): each chunk's [B, chunk, visual_size]
logits are made once and turned at once into the chunk's loss, its hidden-state gradient
(softmax - one-hot) @ head^T and its share of the head gradient, so the backward pass only scales
those by the incoming cotangent. Nothing is recomputed (the logits matmul runs once, where a
checkpointed chunk runs it twice) and nothing of size [L, visual_size] is kept: temporary memory is
O(B x chunk x visual_size) plus the head gradient [d, visual_size] and a reordered copy of the
hidden states. Each row's positions are first reordered so that the weighted ones come first, and
chunks past the batch's largest count of weighted positions are skipped: every row runs that
count rounded up to a chunk, not all L positions (bench_small: 23 of 33 chunks of 256 for 5,740
loss tokens of 8,439). Without differentiation only the loss is computed. `naive` is the
full-logits reference with the same signature: given `head_text` it computes logits over the whole
vocabulary and slices the visual columns, as the official trainer does. Both return (loss, aux) with
aux = {"loss_sum", "n_tokens"} for exact accumulation across micro-batches.

Shapes: hidden [B, L, d] (final-normed); head_visual [d, visual_size] (the decoder's visual head
columns); targets int [B, L] (true ids; only read where weight > 0); weights float [B, L];
head_text [d, visual_offset] (naive only; chunked ignores it: text columns do not enter the loss).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _ce_sum(logits, targets, weights, visual_offset):
  """sum(weights * CE) of float32 visual logits [..., visual_size] against true ids."""
  label = jnp.clip(targets - visual_offset, 0, logits.shape[-1] - 1)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, label[..., None], axis=-1)[..., 0]
  return jnp.sum((logz - picked) * weights)


def _finish(loss_sum, weights):
  n_tokens = jnp.sum(weights)
  return loss_sum / jnp.maximum(n_tokens, 1.0), {"loss_sum": loss_sum, "n_tokens": n_tokens}


def _logits(hidden, head):
  return jnp.einsum("...d,dv->...v", hidden, head.astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


def naive(hidden, head_visual, targets, weights, *, visual_offset: int, chunk: int = 0,
          head_text=None):
  """Reference: logits for every position at once (whole vocabulary when `head_text` is given)."""
  del chunk
  weights = weights.astype(jnp.float32)
  if head_text is not None:
    full = _logits(hidden, jnp.concatenate([head_text, head_visual], axis=1))
    visual = full[..., visual_offset:]
  else:
    visual = _logits(hidden, head_visual)
  return _finish(_ce_sum(visual, targets, weights, visual_offset), weights)


def _split(x, chunk: int):
  """[B, L, ...] -> [n, B, chunk, ...], zero-padded to a multiple of `chunk`."""
  b, length = x.shape[:2]
  pad = -length % chunk
  x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  return x.reshape(b, (length + pad) // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)


def _reorder(x, order):
  """x [B, L, ...] with each row's positions taken in `order` [B, L]."""
  return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)


def _loss_first(hidden, targets, weights, chunk):
  """Each row's weighted positions moved first (stable order), then split into chunks. Returns
  (xs, n_used, order): xs = (chunk index [n], hidden, targets, weights as [n, B, chunk, ...]) for
  a scan; n_used = the chunks holding any weighted position (only those enter the loss: the rest
  have weight 0 everywhere); order [B, L], to put gradients back."""
  order = jnp.argsort((weights <= 0).astype(jnp.int32), axis=1, stable=True)
  n_weighted = jnp.max(jnp.sum(weights > 0, axis=1))
  xs = tuple(_split(_reorder(x, order), chunk) for x in (hidden, targets, weights))
  return (jnp.arange(xs[0].shape[0]),) + xs, (n_weighted + chunk - 1) // chunk, order


def _chunk_grads(h, head, t, w, visual_offset):
  """One chunk's (CE sum, d sum / d h [B, chunk, d], d sum / d head [d, V]) from one logits
  matmul: d CE / d logits = (softmax - one-hot) x weight.

  The two gradient matmuls take their operands in the hidden states' dtype and accumulate in
  float32, like the logits matmul and like autodiff of `naive` under a bfloat16 model: in float32
  operands they were 2/3 of the loss's FLOPs at a fraction of a GPU's bf16 rate (a float32 model
  is unchanged)."""
  logits = _logits(h, head)
  label = jnp.clip(t - visual_offset, 0, logits.shape[-1] - 1)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, label[..., None], axis=-1)[..., 0]
  d_logits = (jnp.exp(logits - logz[..., None]) - jax.nn.one_hot(label, logits.shape[-1])) * w[
      ..., None]
  d_logits = d_logits.astype(h.dtype)
  d_h = jnp.einsum("bcv,dv->bcd", d_logits, head.astype(h.dtype),
                   preferred_element_type=jnp.float32)
  d_head = jnp.einsum("bcd,bcv->dv", h, d_logits, preferred_element_type=jnp.float32)
  return jnp.sum((logz - picked) * w), d_h, d_head


def _ce_sum_and_grads(hidden, head_visual, targets, weights, visual_offset, chunk):
  xs, n_active, order = _loss_first(hidden, targets, weights, chunk)

  def chunk_grads(carry, h, t, w):
    ce, d_h, d_head_chunk = _chunk_grads(h, head_visual, t, w, visual_offset)
    return (carry[0] + ce, carry[1] + d_head_chunk), d_h

  def body(carry, xs):
    i, *hw = xs
    skip = lambda carry, h, *_: (carry, jnp.zeros(h.shape, jnp.float32))
    return jax.lax.cond(i < n_active, chunk_grads, skip, carry, *hw)

  init = (jnp.zeros((), jnp.float32), jnp.zeros(head_visual.shape, jnp.float32))
  (total, d_head), d_h = jax.lax.scan(body, init, xs)
  d_hidden = d_h.swapaxes(0, 1).reshape(hidden.shape[0], -1, hidden.shape[-1])
  d_hidden = _reorder(d_hidden[:, :hidden.shape[1]], jnp.argsort(order, axis=1))
  return total, d_hidden.astype(hidden.dtype), d_head.astype(head_visual.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused_ce_sum(hidden, head_visual, targets, weights, visual_offset, chunk):
  xs, n_active, _ = _loss_first(hidden, targets, weights, chunk)

  def body(total, xs):
    i, h, t, w = xs
    ce = lambda: _ce_sum(_logits(h, head_visual), t, w, visual_offset)
    return total + jax.lax.cond(i < n_active, ce, lambda: jnp.zeros((), jnp.float32)), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
  return total


def _fused_fwd(hidden, head_visual, targets, weights, visual_offset, chunk):
  total, d_hidden, d_head = _ce_sum_and_grads(hidden, head_visual, targets, weights,
                                              visual_offset, chunk)
  return total, (d_hidden, d_head, targets, weights)


def _fused_bwd(visual_offset, chunk, residuals, g):
  del visual_offset, chunk
  d_hidden, d_head, targets, weights = residuals
  # targets are integers (float0 cotangent); weights are data, not parameters: no gradient
  return ((g * d_hidden).astype(d_hidden.dtype), (g * d_head).astype(d_head.dtype),
          np.zeros(targets.shape, jax.dtypes.float0), jnp.zeros_like(weights))


_fused_ce_sum.defvjp(_fused_fwd, _fused_bwd)


def chunked(hidden, head_visual, targets, weights, *, visual_offset: int, chunk: int = 256,
            head_text=None):
  """Same value and gradients as `naive`, `chunk` positions at a time (see the module docstring)."""
  del head_text
  weights = weights.astype(jnp.float32)
  chunk = min(chunk, hidden.shape[1])
  loss_sum = _fused_ce_sum(hidden, head_visual, targets, weights, visual_offset, chunk)
  return _finish(loss_sum, weights)
