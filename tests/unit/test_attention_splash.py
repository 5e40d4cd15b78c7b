"""Splash attention (Pallas, interpret mode on CPU) equals the dense reference, values and
gradients, on the layouts the codebase produces: padded and packed rows, the sampler's left-padded
row, 1-frame images, open videos and the official sample layouts."""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import VOCAB, random_packed_batch, random_sample
from lumos_jax import attention, attention_plan, attention_splash, tokens

# float32 tolerances (max abs error observed: values ~1e-6, gradients ~1e-5 on unit-normal
# inputs; L up to ~4.4k keys for the official layouts)
VALUE_ATOL, GRAD_ATOL, RTOL = 1e-5, 1e-4, 1e-5


def _inputs(rng, b, length, hq, hkv, d, dtype=jnp.float32):
  shapes = [(b, length, hq, d), (b, length, hkv, d), (b, length, hkv, d), (b, length, hq, d)]
  return [jnp.asarray(rng.normal(size=s), dtype) for s in shapes]


def _compare(k_start, k_end, *, hq=4, hkv=2, d=16, seed=0, block_sizes=None):
  """Values and q/k/v gradients of splash vs dense on key ranges int [B, L]; returns the errors."""
  k_start, k_end = np.atleast_2d(k_start), np.atleast_2d(k_end)
  attention_splash.check_segments(k_start, k_end)  # the layouts here meet the precondition
  plan = attention_plan.plan_of(k_start, k_end)
  b, length = k_end.shape
  q, k, v, cot = _inputs(np.random.default_rng(seed), b, length, hq, hkv, d)
  ks, ke = jnp.asarray(k_start), jnp.asarray(k_end)

  @functools.partial(jax.jit, static_argnums=0)
  def run(impl, q, k, v):  # output, and the q/k/v gradients of sum(output * cot)
    out, vjp = jax.vjp(lambda q, k, v: impl(q, k, v, ks, ke, plan=plan, block_sizes=block_sizes),
                       q, k, v)
    return out, vjp(cot)

  (out_s, grads_s), (out_d, grads_d) = (run(f, q, k, v) for f in (attention_splash.splash,
                                                                   attention.dense))
  assert out_s.shape == q.shape and out_s.dtype == q.dtype
  np.testing.assert_allclose(out_s, out_d, rtol=RTOL, atol=VALUE_ATOL)
  for name, gs, gd in zip("qkv", grads_s, grads_d):
    np.testing.assert_allclose(gs, gd, rtol=RTOL, atol=GRAD_ATOL, err_msg=f"d{name}")
  return float(jnp.max(jnp.abs(out_s - out_d))), max(
      float(jnp.max(jnp.abs(gs - gd))) for gs, gd in zip(grads_s, grads_d))


def _stack(*layouts):
  return (np.stack([x.k_start for x in layouts]), np.stack([x.k_end for x in layouts]))


@pytest.mark.parametrize("seed,length,hq,hkv", [(0, 200, 4, 2), (1, 256, 2, 2), (2, 130, 4, 1)])
def test_padded_random_samples(seed, length, hq, hkv):
  """One random sample padded to `length` (GQA, MHA, MQA; lengths off and on a block multiple)."""
  rng = np.random.default_rng(seed)
  ids = random_sample(rng, max_frames=3, max_hw=6)
  _compare(*_stack(tokens.pad(tokens.parse(ids, VOCAB), length)), hq=hq, hkv=hkv, seed=seed)


def test_packed_rows_with_different_k_start():
  """Two packed rows with one band grid: row 1 splits row 0's first sample into its text and its
  video as two packed samples, so k_end is equal and k_start differs."""
  rng = np.random.default_rng(3)
  a, b = random_sample(rng, max_hw=5), random_sample(rng, max_hw=5)
  video = tokens.video_suffix(a, VOCAB)
  text = a[:len(a) - len(video)]
  row0 = tokens.pack([tokens.parse(a, VOCAB), tokens.parse(b, VOCAB)], 300)
  row1 = tokens.pack([tokens.parse(x, VOCAB) for x in (text, video, b)], 300)
  k_start, k_end = _stack(row0, row1)
  assert (k_start[0] != k_start[1]).any() and (k_end[0] == k_end[1]).all()
  _compare(k_start, k_end, seed=3)


@pytest.mark.parametrize("seed", [4, 5])
def test_random_packed_row(seed):
  """A row of 1-3 random samples and padding, as the data pipeline packs them."""
  _, lay = random_packed_batch(np.random.default_rng(seed), 1, 192, max_hw=5)
  _compare(lay["k_start"], lay["k_end"], seed=seed, block_sizes=128)


def test_left_padded_row_like_the_sampler():
  """The sampler's batch: a conditional row and its unconditional row, whose text is replaced by
  `pad` left padding tokens (k_start = q, k_end = q + 1) before the video (k_start = pad)."""
  rng = np.random.default_rng(6)
  ids = random_sample(rng, max_text=20, max_hw=6)
  video = tokens.video_suffix(ids, VOCAB)
  pad = len(ids) - len(video)
  cond = tokens.pad(tokens.parse(ids, VOCAB), 250)
  uncond = tokens.pack([tokens.parse(video, VOCAB)], 250 - pad)
  q = np.arange(pad, dtype=np.int32)
  k_start = np.stack([cond.k_start, np.concatenate([q, uncond.k_start + pad])])
  k_end = np.stack([cond.k_end, np.concatenate([q + 1, uncond.k_end + pad])])
  assert pad > 0 and (k_end[0] == k_end[1]).all() and (k_start[1, pad:len(ids)] == pad).all()
  _compare(k_start, k_end, seed=6)


@pytest.mark.parametrize("close", [True, False])
def test_one_frame_image_and_open_video(close):
  """A 1-frame 8 x 11 image (a 95-token block straddling kernel blocks); close=False leaves the
  video open, as a generation prefix ends (`tokens.build` has no partial frames to test)."""
  rng = np.random.default_rng(7)
  frames = rng.integers(0, VOCAB.visual_size, size=(1, 8, 11))
  ids = tokens.build(rng.integers(80, 300, size=40), frames, fps=8, duration=1, vocab=VOCAB,
                     close=close)
  layout = tokens.pad(tokens.parse(ids, VOCAB), 160)
  assert layout.max_lookahead == tokens.frame_block_length(8, 11) - 1
  _compare(*_stack(layout), seed=7)


def test_bfloat16_close_to_float32_dense():
  """bf16 inputs: output and gradients in bf16, within bf16 rounding of the float32 reference
  (max errors ~0.011 on outputs of size ~1, ~0.024 on gradients up to ~5.5; the dense path in
  bf16 is as far off)."""
  rng = np.random.default_rng(8)
  layout = tokens.pad(tokens.parse(random_sample(rng, max_hw=6), VOCAB), 200)
  k_start, k_end = (jnp.asarray(x)[None] for x in (layout.k_start, layout.k_end))
  plan = attention_plan.plan_of(k_start, k_end)
  q, k, v, cot = _inputs(rng, 1, 200, 4, 2, 32)

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def run(impl, dtype, q, k, v):
    out, vjp = jax.vjp(lambda q, k, v: impl(q, k, v, k_start, k_end, plan=plan),
                       *(x.astype(dtype) for x in (q, k, v)))
    return out, vjp(cot.astype(dtype))

  out, grads = run(attention_splash.splash, jnp.bfloat16, q, k, v)
  out_ref, grads_ref = run(attention.dense, jnp.float32, q, k, v)
  assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
  np.testing.assert_allclose(out.astype(jnp.float32), out_ref, atol=2e-2, rtol=1e-2)
  for name, g, g_ref in zip("qkv", grads, grads_ref):
    np.testing.assert_allclose(g.astype(jnp.float32), g_ref, atol=4e-2, rtol=1e-2,
                               err_msg=f"d{name}")


def test_unpadded_sample_runs_without_segment_ids():
  """k_start == 0 everywhere (one unpadded sample, 151 tokens: padded to 256 inside): the plan
  alone masks, block padding queries included."""
  rng = np.random.default_rng(11)
  ids = tokens.build(rng.integers(80, 300, size=40), rng.integers(0, 512, size=(2, 6, 7)), fps=8,
                     duration=2, vocab=VOCAB)
  layout = tokens.parse(ids, VOCAB)
  assert len(layout) == 151
  assert all(b.from_zero for b in attention_plan.plan_of(layout.k_start, layout.k_end).bands)
  _compare(*_stack(layout), seed=11)


def _official_video(root):
  """Official video record 0 cut to its first frame (~4.4k tokens), parsed."""
  from lumos_jax.data.safe_pickle import load
  records = json.loads((root / "pre_tokenize" / "data" / "test_video" / "merge-record.json")
                       .read_text())
  (entry,) = [r for r in records if r["id"] == 0]
  ids = np.asarray(load(root / entry["file"])["token"], np.int32)
  return tokens.cut_frames(ids, tokens.parse(ids), 1)


def test_official_layouts(official_samples):
  """The official video's first frame (a 4,084-token block after a 269-token prompt), conditional
  and as the sampler's left-padded unconditional row, in one batch."""
  ids = _official_video(official_samples)
  cond = tokens.parse(ids)
  video = tokens.parse(tokens.video_suffix(ids))
  pad = len(cond) - len(video)
  q = np.arange(pad, dtype=np.int32)
  k_start = np.stack([cond.k_start, np.concatenate([q, video.k_start + pad])])
  k_end = np.stack([cond.k_end, np.concatenate([q + 1, video.k_end + pad])])
  assert len(cond) > 4000 and (k_end[0] == k_end[1]).all()
  _compare(k_start, k_end, hq=2, hkv=1, seed=9)


def test_mask_skips_blocks_no_query_reaches():
  """The kernel's block mask follows the plan: blocks above the causal diagonal and past the
  frame blocks are skipped (0), the rest partial (1) or full (2)."""
  plan = attention_plan.plan_of(np.zeros(512, np.int32), np.arange(1, 513, dtype=np.int32))
  sizes = attention_splash._block_sizes(128, 512)
  info = attention_splash._kernel(plan, 512, 1, sizes, True).fwd_mask_info
  block_mask = np.asarray(info.block_mask)[0]
  np.testing.assert_array_equal(block_mask, np.tril(np.ones((4, 4), int)) + np.tril(
      np.ones((4, 4), int), -1))


def test_key_end_mask_blocks_are_exact():
  """The mask's block reads (uniform blocks answered from k_end's range) equal the dense mask."""
  layout = tokens.pad(tokens.parse(random_sample(np.random.default_rng(12), max_hw=6), VOCAB), 256)
  end = layout.k_end
  mask = attention_splash._KeyEndMask(end)
  dense = np.arange(256)[None, :] < end[:, None]
  for size in (16, 64, 128):
    for r in range(0, 256, size):
      for c in range(0, 256, size):
        block = mask[r:r + size, c:c + size]
        np.testing.assert_array_equal(block, dense[r:r + size, c:c + size])
        assert block.dtype == np.bool_
  assert mask == attention_splash._KeyEndMask(end.copy()) and hash(mask) == hash(
      attention_splash._KeyEndMask(end.copy()))


def test_key_end_follows_the_bands():
  layout = tokens.pad(tokens.parse(random_sample(np.random.default_rng(10)), VOCAB), 100)
  plan = attention_plan.plan_of(layout.k_start, layout.k_end)
  end = attention_splash.key_end(plan, 128)
  np.testing.assert_array_equal(end[:100], layout.k_end)
  np.testing.assert_array_equal(end[100:], np.arange(101, 129))


def test_check_segments_rejects_a_sliding_window():
  q = np.arange(8, dtype=np.int32)
  attention_splash.check_segments(np.zeros(8, np.int32), q + 1)
  with pytest.raises(ValueError, match="query 3: key range"):
    attention_splash.check_segments(np.maximum(q - 2, 0), q + 1)


def test_needs_a_plan_and_self_attention():
  x = jnp.zeros((1, 8, 1, 16))
  i = jnp.zeros((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="needs a static attention plan"):
    attention_splash.splash(x, x, x, i, i + 1)
  plan = attention_plan.plan_of(np.zeros(8, np.int32), np.arange(1, 9, dtype=np.int32))
  with pytest.raises(ValueError, match="self-attention"):
    attention_splash.splash(x, x[:, :4], x[:, :4], i, i + 1, plan=plan)
  with pytest.raises(ValueError, match="not a multiple of 128"):
    attention_splash.splash(x, x, x, i, jnp.arange(1, 9)[None], plan=plan, block_sizes=64)
