"""Chunked visual-slice loss equals the full-logits reference (values and gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumos_jax import loss


@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_chunked_equals_naive(chunk):
  rng = np.random.default_rng(chunk)
  b, length, d, vocab, offset, vsize = 2, 45, 16, 280, 100, 180
  hidden = jnp.asarray(rng.normal(size=(b, length, d)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(d, vocab)) * 0.3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, vocab, size=(b, length)), jnp.int32)
  weights = (rng.random((b, length)) < 0.6) & (np.asarray(targets) >= offset) & (
      np.asarray(targets) < offset + vsize)
  weights = jnp.asarray(weights, jnp.float32)

  def value_and_grads(fn):
    def f(h, w):
      return fn(h, w[:, offset:], targets, weights, visual_offset=offset, chunk=chunk,
                head_text=w[:, :offset])[0]
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(hidden, head)

  (v_ref, g_ref), (v_chk, g_chk) = value_and_grads(loss.naive), value_and_grads(loss.chunked)
  np.testing.assert_allclose(v_chk, v_ref, rtol=1e-5, atol=1e-5)
  for a, r in zip(g_chk, g_ref):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)
  # the reference is itself a cross-entropy over the visual columns only
  logits = np.asarray(hidden) @ np.asarray(head)
  vis = logits[..., offset:offset + vsize]
  lse = np.log(np.exp(vis - vis.max(-1, keepdims=True)).sum(-1)) + vis.max(-1)
  t = np.clip(np.asarray(targets) - offset, 0, vsize - 1)
  ce = lse - np.take_along_axis(vis, t[..., None], -1)[..., 0]
  w = np.asarray(weights)
  np.testing.assert_allclose(v_ref, (ce * w).sum() / w.sum(), rtol=1e-5)
  np.testing.assert_array_equal(g_ref[1][:, :offset], 0)  # text columns get no gradient
  _, aux = loss.chunked(hidden, head[:, offset:], targets, weights, visual_offset=offset,
                        chunk=chunk)
  assert float(aux["n_tokens"]) == w.sum()


def test_no_weight_no_loss():
  h = jnp.ones((1, 8, 4))
  head_visual = jnp.ones((4, 10))
  value, aux = loss.chunked(h, head_visual, jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8)),
                            visual_offset=10, chunk=4)
  assert float(value) == 0.0 and float(aux["n_tokens"]) == 0.0


def test_chunked_skips_chunks_without_loss_tokens():
  """Weighted positions are moved to the front of each row, and chunks past the batch's largest
  count of them are never computed: NaN hidden states there (weight 0) cannot reach the loss or
  its gradients, where computing them would (NaN x 0 = NaN). Values and gradients equal the
  reference's on the same states with those NaNs zeroed."""
  rng = np.random.default_rng(1)
  b, length, d, vsize, chunk = 2, 20, 8, 30, 4
  weights = np.zeros((b, length), np.float32)
  weights[0, -3:] = 1  # at the end: only reordering puts them in the first chunk
  weights[1, [2, 9, 11, 17, 19]] = 1  # 5 -> chunks 0 and 1 are computed, 2-4 skipped
  hidden = rng.normal(size=(b, length, d)).astype(np.float32)
  hidden[:, 12:17] = np.nan  # zero-weight positions reordered into the skipped chunks
  head = jnp.asarray(rng.normal(size=(d, vsize)) * 0.3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, vsize, size=(b, length)), jnp.int32)

  def value_and_grads(fn, h):
    def f(h, w):
      return fn(h, w, targets, jnp.asarray(weights), visual_offset=0, chunk=chunk)[0]
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(jnp.asarray(h), head)

  v_chk, g_chk = value_and_grads(loss.chunked, hidden)
  v_ref, g_ref = value_and_grads(loss.naive, np.nan_to_num(hidden, nan=0.0))
  np.testing.assert_allclose(v_chk, v_ref, rtol=1e-5, atol=1e-6)
  for got, ref in zip(g_chk, g_ref):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  assert float(jax.jit(lambda h: loss.chunked(h, head, targets, jnp.asarray(weights),
                                              visual_offset=0, chunk=chunk)[0])(hidden)) == \
      pytest.approx(float(v_ref), rel=1e-5)


def _flops(fn, *args):
  ca = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])


def test_chunked_gradient_computes_the_logits_once():
  """The backward pass reuses the forward's work: value_and_grad costs what the full-logits
  reference's costs (one logits matmul + the two gradient matmuls), not a recomputation more.
  One chunk, so XLA's count (a loop body counted once) is exact."""
  b, length, d, vsize = 1, 64, 32, 512
  hidden, head = jnp.ones((b, length, d)), jnp.ones((d, vsize))
  targets, weights = jnp.zeros((b, length), jnp.int32), jnp.ones((b, length))

  def grad_of(fn):
    return jax.value_and_grad(lambda h, w: fn(h, w, targets, weights, visual_offset=0,
                                              chunk=length)[0], argnums=(0, 1))

  matmul = 2 * b * length * d * vsize
  fused, naive = _flops(grad_of(loss.chunked), hidden, head), _flops(grad_of(loss.naive),
                                                                     hidden, head)
  assert 3 * matmul <= fused <= 1.1 * naive, (fused / matmul, naive / matmul)


def test_chunked_bfloat16_hidden():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 20, 8)), jnp.bfloat16)
  head = jnp.asarray(rng.normal(size=(8, 30)) * 0.3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 30, size=(2, 20)), jnp.int32)
  weights = jnp.asarray(rng.random((2, 20)) < 0.5, jnp.float32)

  def f(fn, h, w):
    return fn(h, w, targets, weights, visual_offset=0, chunk=8)[0]
  g_chk = jax.grad(lambda h, w: f(loss.chunked, h, w), argnums=(0, 1))(hidden, head)
  # reference: the full-logits loss in float32 on the same (bf16-representable) hidden states
  g_ref = jax.grad(lambda h, w: f(loss.naive, h, w), argnums=(0, 1))(hidden.astype(jnp.float32),
                                                                       head)
  assert g_chk[0].dtype == jnp.bfloat16 and g_chk[1].dtype == jnp.float32
  for got, ref in zip(g_chk, g_ref):  # bf16 logits: ~3 significant digits
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=2e-2, atol=5e-3)
