"""AR-DF training loss: cross-entropy on masked visual slots over the vocabulary's visual slice.

LUMOS_REFERENCE.md section 3.9: no shift (position i's hidden state predicts the token at i), only
slots with weight > 0 count (the pipeline sets weight 1 on masked visual code slots), softmax over
the visual ids [visual_offset, visual_offset + visual_size) only, token mean over the whole batch.

`chunked` never materialises [L, vocab] logits: it scans over chunks of `chunk` positions and
recomputes each chunk's [B, chunk, visual_size] logits in the backward pass (`jax.checkpoint`), so
its temporary memory is O(B x chunk x visual_size) plus the head gradient. `naive` is the
full-logits reference with the same signature: given `head_text` it computes logits over the whole
vocabulary and slices the visual columns, as the official trainer does. Both return (loss, aux) with
aux = {"loss_sum", "n_tokens"} for exact accumulation across micro-batches.

Shapes: hidden [B, L, d] (final-normed); head_visual [d, visual_size] (the decoder's visual head
columns); targets int [B, L] (true ids; only read where weight > 0); weights float [B, L];
head_text [d, visual_offset] (naive only; chunked ignores it: text columns do not enter the loss).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


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


def chunked(hidden, head_visual, targets, weights, *, visual_offset: int, chunk: int = 256,
            head_text=None):
  """Same value as `naive`, `chunk` positions at a time with rematerialised logits."""
  del head_text
  b, length, d = hidden.shape
  weights = weights.astype(jnp.float32)
  chunk = min(chunk, length)
  pad = -length % chunk
  n = (length + pad) // chunk

  def split(x):  # [B, L, ...] -> [n, B, chunk, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_sum(h, t, w):
    return _ce_sum(_logits(h, head_visual), t, w, visual_offset)

  def body(total, xs):
    return total + chunk_sum(*xs), None

  loss_sum, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                             (split(hidden), split(targets), split(weights)))
  return _finish(loss_sum, weights)
