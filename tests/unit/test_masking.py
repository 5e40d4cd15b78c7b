"""AR-DF masks: tube structure, ratio distribution, loss weights, the inference history pattern."""
import numpy as np
import pytest

from helpers import VOCAB
from lumos_jax import masking, tokens


def _sample(t=4, h=3, w=5, seed=0):
  rng = np.random.default_rng(seed)
  ids = tokens.build(rng.integers(100, 300, size=4), rng.integers(0, 512, size=(t, h, w)),
                     fps=4, duration=1, vocab=VOCAB)
  return ids, tokens.parse(ids, VOCAB)


def _frame_masks(out, lay):
  frames = np.unique(lay.frame[lay.content])
  return np.stack([(out["inputs"] == VOCAB.mask)[lay.content & (lay.frame == f)] for f in frames])


def test_tube_mask_is_one_pattern_on_every_frame():
  ids, lay = _sample()
  rng = np.random.default_rng(1)
  for _ in range(50):
    out = masking.ardf_mask(ids, lay, rng, masking.MaskConfig(), VOCAB)
    per_frame = _frame_masks(out, lay)
    assert (per_frame == per_frame[0]).all()
    assert per_frame[0].sum() == max(1, round(per_frame.shape[1] * out["ratio"]))
    assert 0.7 <= out["ratio"] <= 1.0


def test_ratio_distribution_matches_clipped_cosine():
  ids, lay = _sample(t=1, h=2, w=2)
  rng = np.random.default_rng(2)
  cfg = masking.MaskConfig()
  ratios = np.array([masking.ardf_mask(ids, lay, rng, cfg, VOCAB)["ratio"] for _ in range(10_000)])
  assert abs(np.mean(ratios == 0.7) - 0.494) < 0.02
  above = ratios[ratios > 0.7]  # unclipped part: r = cos(pi/2 u), so P(r > x) = 2/pi acos(x)
  assert abs(np.mean(ratios > 0.9) - 2 / np.pi * np.arccos(0.9)) < 0.02
  assert above.min() > 0.7 and above.max() <= 1.0


def test_weights_only_on_masked_code_slots():
  ids, lay = _sample(seed=3)
  rng = np.random.default_rng(3)
  for kind in masking.KINDS:
    out = masking.ardf_mask(ids, lay, rng, masking.MaskConfig(kind=kind), VOCAB)
    masked = out["inputs"] != ids
    np.testing.assert_array_equal(out["targets"], ids)
    assert (out["inputs"][masked] == VOCAB.mask).all()
    assert not masked[~lay.content].any()  # text, headers, size tokens, IMAGE_END never masked
    np.testing.assert_array_equal(out["weights"] > 0, masked & lay.code)
    assert set(np.unique(out["weights"])) <= {0.0, 1.0}
    assert out["weights"].sum() > 0


def test_random_and_per_frame_kinds():
  ids, lay = _sample(t=6, h=4, w=6, seed=4)
  rng = np.random.default_rng(4)
  out = masking.ardf_mask(ids, lay, rng, masking.MaskConfig(kind="random"), VOCAB)
  assert (out["inputs"][lay.content] == VOCAB.mask).sum() == round(lay.content.sum() * out["ratio"])
  differs = 0
  for _ in range(20):
    out = masking.ardf_mask(ids, lay, rng, masking.MaskConfig(kind="per_frame", min_ratio=0.3),
                            VOCAB)
    per_frame = _frame_masks(out, lay)
    assert (per_frame.sum(1) >= round(0.3 * per_frame.shape[1])).all()
    differs += int(len(set(per_frame.sum(1))) > 1)
  assert differs > 10  # independent ratios per frame


def test_per_frame_history_frames_are_masked_at_the_history_ratio():
  ids, lay = _sample(t=6, h=4, w=6, seed=6)
  rng = np.random.default_rng(6)
  cfg = masking.MaskConfig(kind="per_frame", min_ratio=0.0, history_prob=0.5, history_ratio=0.7)
  slots = int((lay.content & (lay.frame == 0)).sum())
  at_ratio = round(0.7 * slots)
  cuts = []
  for _ in range(2000):
    counts = _frame_masks(masking.ardf_mask(ids, lay, rng, cfg, VOCAB), lay).sum(1)
    cuts.append(int(np.argmin(counts == at_ratio)))  # leading frames at exactly the history ratio
  cuts = np.array(cuts)
  # A frame drawn freely (r = cos(pi/2 u)) lands on exactly that count with probability p (~3%),
  # so the leading run of such frames is the history cut: about half the samples have one,
  # spread uniformly over [1, 6).
  lo, hi = (at_ratio - 0.5) / slots, (at_ratio + 0.5) / slots
  p = 2 / np.pi * (np.arccos(lo) - np.arccos(hi))
  assert abs(np.mean(cuts >= 1) - (0.5 + 0.5 * p)) < 0.03
  np.testing.assert_allclose(np.bincount(cuts[cuts >= 1], minlength=6)[1:] / (cuts >= 1).sum(),
                             0.2, atol=0.04)
  assert (cuts < 6).all()  # the last frame is never history


def test_per_frame_without_history_draws_as_before():
  ids, lay = _sample(t=5, seed=7)
  cfg = masking.MaskConfig(kind="per_frame", min_ratio=0.2)
  got = masking.ardf_mask(ids, lay, np.random.default_rng(7), cfg, VOCAB)
  rng = np.random.default_rng(7)  # the per_frame loop restated: ratio, then pattern, per frame
  expect = np.zeros(len(ids), bool)
  rng.random()  # the sample's reported ratio
  for f in range(5):
    in_f = np.flatnonzero(lay.content & (lay.frame == f))
    r = max(np.cos(np.pi / 2 * rng.random()), 0.2)
    expect[in_f[rng.permutation(len(in_f))[:max(1, int(np.round(len(in_f) * r)))]]] = True
  np.testing.assert_array_equal(got["inputs"] == VOCAB.mask, expect)


def test_history_pattern_is_evenly_spaced():
  np.testing.assert_array_equal(np.flatnonzero(masking.history_pattern(10, 0.7)),
                                [0, 1, 3, 4, 6, 7, 9])
  p = masking.history_pattern(48 * 85, 0.7)
  assert p.sum() == round(0.7 * 48 * 85)
  assert masking.history_pattern(5, 0.0).sum() == 1  # at least one slot


def test_history_mask_through_shared_code():
  ids, lay = _sample(t=3, seed=5)
  slots = int((lay.content & (lay.frame == 0)).sum())
  pattern = masking.history_pattern(slots, 0.7)
  out, masked = masking.apply_frame_pattern(ids, lay, pattern, VOCAB, frames=[0, 1])
  assert not masked[lay.frame == 2].any()
  for f in (0, 1):
    np.testing.assert_array_equal(masked[lay.content & (lay.frame == f)], pattern)
  np.testing.assert_array_equal(out[~masked], ids[~masked])


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="mask.kind='block'"):
    masking.MaskConfig(kind="block")
  with pytest.raises(ValueError, match="mask.min_ratio"):
    masking.MaskConfig(min_ratio=1.5)
  with pytest.raises(ValueError, match="mask.history_prob=0.5 needs mask.kind='per_frame'"):
    masking.MaskConfig(history_prob=0.5)
  with pytest.raises(ValueError, match="mask.history_ratio"):
    masking.MaskConfig(kind="per_frame", history_ratio=-0.1)
