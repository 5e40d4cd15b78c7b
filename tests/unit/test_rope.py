"""Rotary embeddings: the frequency->axis tables, relative-position invariance, text = 1-D RoPE."""
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import VOCAB, random_sample
from lumos_jax import rope, tokens
from lumos_jax.model import ModelConfig


def test_mm_axis_table_head_dim_64():
  axes = rope.frequency_axes(64, "mm")
  t = [0, 1, 2, 3, 16, 17, 18, 19]
  h = [4, 5, 8, 9, 12, 13, 20, 21, 24, 25, 28, 29]
  w = [6, 7, 10, 11, 14, 15, 22, 23, 26, 27, 30, 31]
  assert np.flatnonzero(axes == 0).tolist() == t
  assert np.flatnonzero(axes == 1).tolist() == h
  assert np.flatnonzero(axes == 2).tolist() == w


def test_3d_axis_table_is_contiguous_2_3_3():
  axes = rope.frequency_axes(64, "3d")
  assert axes.tolist() == [0] * 8 + [1] * 12 + [2] * 12


@pytest.mark.parametrize("head_dim", [48, 16, 33])
def test_mm_head_dim_must_be_multiple_of_32(head_dim):
  with pytest.raises(ValueError, match="head_dim"):
    ModelConfig(vocab_size=840, visual_offset=328, d_model=64, n_layers=1, n_heads=2, n_kv_heads=1,
                head_dim=head_dim, mlp_dim=64)


def _video_layout(seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, VOCAB.visual_size, size=(3, 4, 4))
  ids = tokens.build([100, 101], frames, fps=12, duration=2, vocab=VOCAB)
  return tokens.parse(ids, VOCAB, strides=(4, 8, 8))


def _visual_logits(positions, q, k, head_dim, variant):
  a = rope.angles(positions, head_dim, variant=variant)
  qr = rope.apply(q[:, None, :], a)[:, 0]
  kr = rope.apply(k[:, None, :], a)[:, 0]
  return np.asarray(qr @ kr.T)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mm_logits_invariant_to_clip_shift(axis):
  lay = _video_layout()
  vis = lay.content
  rng = np.random.default_rng(1)
  head_dim = 64
  q = jnp.asarray(rng.normal(size=(vis.sum(), head_dim)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(vis.sum(), head_dim)), jnp.float32)
  pos = lay.positions[vis]
  shifted = pos.copy()
  shifted[:, axis] += 37
  before = _visual_logits(pos, q, k, head_dim, "mm")
  after = _visual_logits(shifted, q, k, head_dim, "mm")
  np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
  # ... and the logits do depend on relative position (the check can fail).
  moved = pos.copy()
  moved[: len(pos) // 2, axis] += 37
  assert np.abs(_visual_logits(moved, q, k, head_dim, "mm") - before).max() > 1e-2


def test_text_only_all_variants_equal_1d():
  rng = np.random.default_rng(2)
  text_ids = rng.integers(72, 328, size=50)
  lay = tokens.parse(text_ids.astype(np.int32), VOCAB)
  assert not lay.content.any()
  ref = rope.angles(rope.rope_positions(lay.positions, lay.index, "1d"), 64, variant="1d")
  x = jnp.asarray(rng.normal(size=(50, 2, 64)), jnp.float32)
  for variant in rope.VARIANTS:
    a = rope.angles(rope.rope_positions(lay.positions, lay.index, variant), 64, variant=variant)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(ref))
    np.testing.assert_array_equal(np.asarray(rope.apply(x, a)), np.asarray(rope.apply(x, ref)))
  np.testing.assert_array_equal(
      np.asarray(ref), np.arange(50, dtype=np.float32)[:, None] * rope.inv_frequencies(64))


def test_text_tokens_of_a_video_use_1d_rope():
  lay = tokens.parse(random_sample(np.random.default_rng(3)), VOCAB)
  a = np.asarray(rope.angles(lay.positions, 64, variant="mm"))
  text = ~lay.content
  np.testing.assert_array_equal(
      a[text], lay.index[text].astype(np.float32)[:, None] * rope.inv_frequencies(64))


def test_rotation_preserves_norm_and_matches_pairing():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(5, 3, 32)), jnp.float32)
  ang = jnp.asarray(rng.uniform(0, 6, size=(5, 16)), jnp.float32)
  y = np.asarray(rope.apply(x, ang))
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
  c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
  np.testing.assert_allclose(y[..., :16], x[..., :16] * c - x[..., 16:] * s, atol=1e-6)
  np.testing.assert_allclose(y[..., 16:], x[..., 16:] * c + x[..., :16] * s, atol=1e-6)
