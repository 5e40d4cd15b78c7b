"""AR-DF training loss: cross-entropy on masked visual slots over the visual slice of the vocabulary.

LUMOS_REFERENCE.md section 3.9: no shift (position i's hidden state predicts the token at i), only
slots with weight > 0 count (the pipeline sets weight 1 on masked visual code slots), softmax over
ids [visual_offset, visual_offset + visual_size) only, token mean over the whole batch.

`chunked` never materialises [L, vocab] logits: it scans over chunks of `chunk` positions and
recomputes each chunk's [B, chunk, visual_size] logits in the backward pass (`jax.checkpoint`), so
its temporary memory is O(B x chunk x visual_size). `naive` is the full-logits reference with the
same signature. Both return (loss, aux) with aux = {"loss_sum", "n_tokens"} for exact accumulation.

Shapes: hidden [B, L, d] (final-normed), head [d, vocab], targets int [B, L] (true ids; only read
where weight > 0), weights float [B, L].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _visual_ce(hidden, head_visual, targets, weights, visual_offset):
  """Weighted CE summed over positions; logits in float32 over the visual columns only."""
  logits = jnp.einsum("...d,dv->...v", hidden, head_visual.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  label = jnp.clip(targets - visual_offset, 0, head_visual.shape[1] - 1)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, label[..., None], axis=-1)[..., 0]
  return jnp.sum((logz - picked) * weights)


def _finish(loss_sum, weights):
  n_tokens = jnp.sum(weights)
  loss = loss_sum / jnp.maximum(n_tokens, 1.0)
  return loss, {"loss_sum": loss_sum, "n_tokens": n_tokens}


def naive(hidden, head, targets, weights, *, visual_offset: int, visual_size: int, chunk: int = 0):
  """Reference: full-vocabulary logits [B, L, vocab], sliced to the visual ids, then CE."""
  del chunk
  logits = jnp.einsum("bld,dv->blv", hidden, head.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  visual = logits[..., visual_offset:visual_offset + visual_size]
  label = jnp.clip(targets - visual_offset, 0, visual_size - 1)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(visual, axis=-1), label[..., None], axis=-1)[..., 0]
  return _finish(jnp.sum(ce * weights.astype(jnp.float32)), weights.astype(jnp.float32))


def chunked(hidden, head, targets, weights, *, visual_offset: int, visual_size: int,
            chunk: int = 512):
  """Same value as `naive`, computed `chunk` positions at a time with rematerialised logits."""
  b, length, d = hidden.shape
  weights = weights.astype(jnp.float32)
  head_visual = jax.lax.slice_in_dim(head, visual_offset, visual_offset + visual_size, axis=1)
  chunk = min(chunk, length)
  pad = -length % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    weights_p = jnp.pad(weights, ((0, 0), (0, pad)))
  else:
    weights_p = weights
  n = (length + pad) // chunk
  # [n, B, chunk, ...]: scan over position chunks
  xs = (hidden.reshape(b, n, chunk, d).swapaxes(0, 1), targets.reshape(b, n, chunk).swapaxes(0, 1),
        weights_p.reshape(b, n, chunk).swapaxes(0, 1))

  @jax.checkpoint
  def chunk_sum(h, t, w):
    return _visual_ce(h, head_visual, t, w, visual_offset)

  def body(total, x):
    return total + chunk_sum(*x), None

  loss_sum, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
  return _finish(loss_sum, weights)
