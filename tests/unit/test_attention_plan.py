"""The attention plan: bands derived from key ranges, refused where rows disagree."""
import numpy as np
import pytest

from helpers import VOCAB, random_sample
from lumos_jax import attention_plan, tokens


def test_bands_of_a_video_follow_its_frames():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, VOCAB.visual_size, size=(3, 2, 3))
  lay = tokens.parse(tokens.build([300, 301], frames, fps=8, duration=1, vocab=VOCAB), VOCAB)
  plan = attention_plan.plan_of(lay.k_start, lay.k_end)
  block = tokens.frame_block_length(2, 3)
  full = [b for b in plan.bands if not b.causal]
  assert [b.hi - b.lo for b in full] == [block] * 3
  assert [b.key_hi for b in full] == [b.hi for b in full]
  assert plan.bands[0].causal and plan.bands[0].lo == 0 and plan.bands[-1].causal
  assert [b.lo for b in plan.bands[1:]] == [b.hi for b in plan.bands[:-1]]
  assert plan.bands[-1].hi == plan.length == len(lay)
  for b in plan.bands:  # every band reproduces the key ranges it stands for
    expect = np.arange(b.lo, b.hi) + 1 if b.causal else np.full(b.hi - b.lo, b.key_hi)
    np.testing.assert_array_equal(lay.k_end[b.lo:b.hi], expect)
  allowed = attention_plan.allowed_pairs(lay.k_start, lay.k_end)
  assert allowed == int(np.sum(lay.k_end - lay.k_start))
  # keys start at 0 and frame bands end where their frames end: only the causal bands' masked
  # upper triangles are executed beyond the allowed pairs
  triangles = sum((b.hi - b.lo) * (b.hi - b.lo - 1) // 2 for b in plan.bands if b.causal)
  assert plan.pairs == allowed + triangles


def test_left_padding_and_packing_clear_from_zero():
  rng = np.random.default_rng(1)
  lays = [tokens.parse(random_sample(rng), VOCAB) for _ in range(2)]
  packed = tokens.pack(lays, len(lays[0]) + len(lays[1]) + 4)
  plan = attention_plan.plan_of(packed.k_start, packed.k_end)
  second = [b for b in plan.bands if b.lo >= len(lays[0])]
  assert second and not any(b.from_zero for b in second)
  assert all(b.from_zero for b in plan.bands if b.hi <= len(lays[0]))
  assert plan.pairs > attention_plan.allowed_pairs(packed.k_start, packed.k_end)


def test_rows_with_different_grids_are_refused():
  rng = np.random.default_rng(2)
  a = tokens.pad(tokens.parse(random_sample(rng, max_frames=1), VOCAB), 64)
  b = tokens.pad(tokens.parse(random_sample(rng, max_frames=3), VOCAB), 64)
  with pytest.raises(ValueError, match="k_end differs between rows"):
    attention_plan.plan_of(np.stack([a.k_start, b.k_start]), np.stack([a.k_end, b.k_end]))
  plan = attention_plan.plan_of(a.k_start, a.k_end)
  attention_plan.check(plan, a.k_start, a.k_end)
  with pytest.raises(ValueError, match="differ from the plan"):
    attention_plan.check(plan, b.k_start, b.k_end)


def test_a_query_that_cannot_see_itself_is_refused():
  k_end = np.array([1, 2, 2, 4])
  with pytest.raises(ValueError, match="query 2 does not attend itself"):
    attention_plan.plan_of(np.zeros(4, np.int32), k_end)
