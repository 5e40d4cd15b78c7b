"""The AR-DF sampler: KV-cached decoding equals full recomputation (T2I, T2V, I2V), CFG limits,
history masking, request validation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import VOCAB
from lumos_jax import config, rope, tokens
from lumos_jax.sample import sampler as sample
from lumos_jax.model import Decoder

# A larger init than training uses makes the logits depend strongly on the context, so a wrong
# cache, position or mask would change the sampled tokens.
TINY = dataclasses.replace(config.model_config(config.load("tiny")), remat="none", init_std=0.3)
SC = sample.SampleConfig(frames=2, height=3, width=4, fps=4, duration=1, steps=4, cfg_scale=3.0,
                         history_mask=0.5)


@pytest.fixture(scope="module")
def sampler():
  return sample.Sampler(Decoder(TINY, rngs=nnx.Rngs(3)), VOCAB, strides=(1, 4, 4))


@pytest.mark.parametrize("mode", ["t2i", "t2v", "i2v"])
def test_cached_generation_equals_full_recomputation(sampler, mode):
  text = VOCAB.encode_text("a red circle moves left")
  sc, given = SC, None
  if mode == "t2i":
    sc = dataclasses.replace(SC, frames=1)
  if mode == "i2v":
    given = np.random.default_rng(0).integers(0, 121, size=(1, 3, 4))
  for schedule in ("cumulative", "per_frame"):
    sc = dataclasses.replace(sc, temperature_schedule=schedule)
    cached = sampler.generate(text, sc, seed=5, given=given)
    full = sampler.generate(text, sc, seed=5, given=given, cached=False)
    np.testing.assert_array_equal(cached, full)
    n_given = 0 if given is None else 1
    assert cached.shape == (n_given + sc.frames, 3, 4)
    assert cached.min() >= 0 and cached.max() < VOCAB.visual_size
    if given is not None:
      np.testing.assert_array_equal(cached[:1], given)
  other = sampler.generate(text, sc, seed=6, given=given)
  assert not np.array_equal(other, cached)  # the seed matters


def _fake_logits(cond, uncond):
  return lambda operands, cur: jnp.stack([cond, uncond])


@pytest.mark.parametrize("scale,expected", [(0.0, "uncond"), (1.0, "cond")])
def test_cfg_scale_limits(scale, expected):
  rng = np.random.default_rng(1)
  block = 3 + 2 * 5 + 1
  code = np.concatenate([[False] * 3, np.tile(np.arange(5) < 4, 2), [False]])
  cond = jnp.asarray(rng.normal(size=(block, 50)) * 3, jnp.float32)
  uncond = jnp.asarray(rng.normal(size=(block, 50)) * 3, jnp.float32)
  cur = jnp.asarray(np.where(code, VOCAB.mask, VOCAB.newline)[None].repeat(2, 0))
  sc = dataclasses.replace(SC, cfg_scale=scale, steps=5)
  kw = dict(sc=sc, code_slot=code, mask_id=VOCAB.mask, visual_offset=VOCAB.visual_offset)
  key = jax.random.key(0)
  guided, _ = sample.decode_frame(_fake_logits(cond, uncond), (), cur, key, 1.0, **kw)
  target = cond if expected == "cond" else uncond
  plain, _ = sample.decode_frame(_fake_logits(target, target), (), cur, key, 1.0, **kw)
  np.testing.assert_array_equal(guided, plain)
  assert not (np.asarray(guided[0])[code] == VOCAB.mask).any()  # every code slot decided


def test_code_bias_adds_to_the_guided_logits():
  """Decoding with code_bias equals decoding logits that already carry the bias (guidance is
  affine, so a bias on both rows is a bias on the guided logits); a large negative bias keeps a
  code out."""
  rng = np.random.default_rng(2)
  block = 3 + 2 * 5 + 1
  code = np.concatenate([[False] * 3, np.tile(np.arange(5) < 4, 2), [False]])
  cond = jnp.asarray(rng.normal(size=(block, 6)), jnp.float32)
  uncond = jnp.asarray(rng.normal(size=(block, 6)), jnp.float32)
  cur = jnp.asarray(np.where(code, VOCAB.mask, VOCAB.newline)[None].repeat(2, 0))
  kw = dict(code_slot=code, mask_id=VOCAB.mask, visual_offset=VOCAB.visual_offset)
  key, sc = jax.random.key(0), dataclasses.replace(SC, steps=5)
  bias = jnp.zeros(6).at[0].set(-1.5).at[4].set(2.0)
  with_bias, _ = sample.decode_frame(_fake_logits(cond, uncond), (), cur, key, 1.0,
                                     sc=dataclasses.replace(sc, code_bias=((0, -1.5), (4, 2.0))),
                                     **kw)
  shifted, _ = sample.decode_frame(_fake_logits(cond + bias, uncond + bias), (), cur, key, 1.0,
                                   sc=sc, **kw)
  np.testing.assert_array_equal(with_bias, shifted)
  plain, _ = sample.decode_frame(_fake_logits(cond, uncond), (), cur, key, 1.0, sc=sc, **kw)
  common = int(np.bincount(np.asarray(plain[0])[code] - VOCAB.visual_offset).argmax())
  banned, _ = sample.decode_frame(_fake_logits(cond, uncond), (), cur, key, 1.0,
                                  sc=dataclasses.replace(sc, code_bias=((common, -1e9),)), **kw)
  assert common + VOCAB.visual_offset not in np.asarray(banned[0])[code]


def test_plan_rows_align_frames_and_hide_padding():
  p = sample.plan(VOCAB, VOCAB.encode_text("hi"), SC, strides=(1, 4, 4))
  assert p.ids.shape[0] == 2
  for f in range(SC.frames):
    b0 = p.prefix + f * p.block
    np.testing.assert_array_equal(p.ids[0, b0:b0 + p.block], p.ids[1, b0:b0 + p.block])
    assert p.ids[0, b0] == VOCAB.image_start
  pad = int(np.argmax(p.ids[1] == VOCAB.video_start))
  q = np.arange(p.ids.shape[1])
  assert np.all(p.k_start[1][pad:] >= pad)  # uncond tokens never see the padding
  np.testing.assert_array_equal(p.k_end[1][:pad], q[:pad] + 1)
  p0 = pad + 6  # uncond positions restart at 0: P0 = 6 (LUMOS_REFERENCE.md 1.4)
  np.testing.assert_array_equal(p.positions[1][p0], [6, 6, 6])
  assert p.history_slot.sum() == round(0.5 * 3 * 5)


def test_plan_pads_both_rows_and_the_padding_changes_no_hidden_state():
  text = VOCAB.encode_text("a blue square moves up, then left")
  p = sample.plan(VOCAB, text, SC, strides=(1, 4, 4))
  short_text = VOCAB.encode_text("a blue square moves up")
  short = sample.plan(VOCAB, short_text, SC, strides=(1, 4, 4))
  frames = np.zeros((SC.frames, SC.height, SC.width), np.int64)
  n, n_short = (len(tokens.build(list(t), frames, SC.fps, SC.duration, vocab=VOCAB, close=False))
                for t in (text, short_text))
  # two template lengths, one padded length: one compilation serves both prompts
  assert n_short < n and p.ids.shape == short.ids.shape
  assert p.ids.shape[1] % sample.LENGTH_BUCKET == 0
  pad = p.ids.shape[1] - n
  assert pad > 0 and np.all(p.k_start[0][pad:] >= pad)  # the cond row's own tokens skip it
  ids = p.ids[0, pad:]  # the unpadded template, laid out afresh
  lay = tokens.parse(ids, VOCAB, (1, 4, 4))
  model = Decoder(TINY, rngs=nnx.Rngs(4))
  rope_pos = lambda pos, index: jnp.asarray(rope.rope_positions(pos, index, TINY.rope_variant))
  unpadded = model(jnp.asarray(ids[None]), rope_pos(lay.positions[None], lay.index[None]),
                   jnp.asarray(lay.k_start[None]), jnp.asarray(lay.k_end[None]))
  padded = model(jnp.asarray(p.ids), rope_pos(p.positions, p.index), jnp.asarray(p.k_start),
                 jnp.asarray(p.k_end))
  np.testing.assert_allclose(padded[0, pad:], unpadded[0], rtol=1e-5, atol=1e-5)


def test_bad_requests():
  with pytest.raises(ValueError, match="temperature_schedule='cosine'"):
    sample.SampleConfig(frames=1, height=2, width=2, temperature_schedule="cosine")
  with pytest.raises(ValueError, match="given frames are"):
    sample.plan(VOCAB, [], SC, given=np.zeros((1, 2, 2), int))
  for bias in (((-1, 1.0),), ((0, 1.0), (0, -1.0)), ((121, 1.0),)):
    with pytest.raises(ValueError, match="code_bias=.*distinct visual code indices"):
      sample.SampleConfig(frames=1, height=2, width=2, code_limit=121, code_bias=bias)
  assert sample.parse_code_bias(["0:-1.5", "7:2"]) == ((0, -1.5), (7, 2.0))
  for item in ("0", "a:1", "0:x"):
    with pytest.raises(ValueError, match=f"--code_bias item '{item}': expected CODE:BIAS"):
      sample.parse_code_bias([item])


def test_history_mask_through_cache_equals_masked_history_in_full():
  model = Decoder(TINY, rngs=nnx.Rngs(4))
  p = sample.plan(VOCAB, VOCAB.encode_text("a blue square moves up"), SC, strides=(1, 4, 4))
  rng = np.random.default_rng(2)
  ids = p.ids.copy()
  b0, b1, b2 = p.prefix, p.prefix + p.block, p.prefix + 2 * p.block
  frame0 = ids[:, b0:b1].copy()
  frame0[:, p.code_slot] = rng.integers(0, 121, size=int(p.code_slot.sum())) + VOCAB.visual_offset
  masked0 = np.where(p.history_slot, VOCAB.mask, frame0)
  arr = lambda x, sl: jnp.asarray(x[:, sl])
  cache = model.init_cache(2, ids.shape[1])
  for sl, block in ((slice(0, b0), ids[:, :b0]), (slice(b0, b1), masked0)):
    _, cache = model.extend(cache, jnp.asarray(block), arr(p.positions, sl), arr(p.k_start, sl),
                            arr(p.k_end, sl))
  sl = slice(b1, b2)
  cached, _ = model.extend(cache, arr(ids, sl), arr(p.positions, sl), arr(p.k_start, sl),
                           arr(p.k_end, sl), write=False)

  def full(history):
    x = ids.copy()
    x[:, b0:b1] = history
    h = model(jnp.asarray(x[:, :b2]), arr(p.positions, slice(0, b2)), arr(p.k_start, slice(0, b2)),
              arr(p.k_end, slice(0, b2)))
    return h[:, b1:b2]

  np.testing.assert_allclose(cached, full(masked0), rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(cached - full(frame0)))) > 1e-3  # the mask matters
