"""The caption scorer behind `python -m lumos_jax.synthetic.evaluate`, against videos with known
answers."""
import numpy as np
import pytest

from lumos_jax.synthetic import dataset as synthetic, score as ss

CFG = synthetic.SyntheticConfig()


@pytest.fixture(scope="module")
def samples():
  tok = synthetic.PatchTokenizer(CFG)
  return [(s, tok.decode(tok.encode(s.video))) for s in
          (synthetic.generate(3, i, CFG) for i in range(60))]


def test_dataset_videos_score_perfectly(samples):
  rows = [ss.score(video, s.caption, CFG, s.video) for s, video in samples]
  m = ss.mean_scores(rows)
  assert m["shape_acc"] == m["color_acc"] == m["direction_acc"] == 1.0
  assert m["temporal_consistency"] == m["detected"] == m["area_ratio"] == 1.0
  # centres move in whole 2-px cells: at most half a cell off the straight constant-speed line
  assert max(r["trajectory_error_px"] for r in rows) <= 0.5 and m["trajectory_scored"] == 60
  for _, video in samples[:10]:  # the object centre is the dataset's own `locate`
    centres = np.stack([d.centre for d in ss.detect(video, CFG)])
    np.testing.assert_allclose(centres, synthetic.locate(video))


def test_each_score_sees_its_own_error(samples):
  s, video = next((s, v) for s, v in samples if s.colour != "red" and s.shape != "square")
  other = synthetic.COLOURS["red"]
  recoloured = np.where((video != 0).any(-1, keepdims=True), np.uint8(other), video)
  r = ss.score(recoloured, s.caption, CFG)
  assert r["color_acc"] == 0 and r["shape_acc"] == 1 and r["direction_acc"] == 1
  assert ss.score(video[::-1], s.caption, CFG)["direction_acc"] == 0  # played backwards
  still = ss.score(np.repeat(video[:1], len(video), 0), s.caption, CFG)
  assert still["direction_acc"] == 0 and still["trajectory_error_px"] < 1e-9  # no motion
  wrong_shape = s.caption.replace(s.shape, "square")
  assert ss.score(video, wrong_shape, CFG)["shape_acc"] == 0
  empty = ss.score(np.zeros_like(video), s.caption, CFG)
  assert empty["detected"] == empty["shape_acc"] == empty["color_acc"] == 0
  assert np.isnan(empty["trajectory_error_px"]) and empty["temporal_consistency"] == 0


def test_a_jittering_object_has_trajectory_error(samples):
  s, video = samples[0]
  shifted = video.copy()
  shifted[1::2] = np.roll(video[1::2], 6, axis=2 if s.direction in ("up", "down") else 1)
  assert ss.score(shifted, s.caption, CFG)["trajectory_error_px"] > 2.5


def test_random_codes_score_near_chance():
  tok = synthetic.PatchTokenizer(CFG)
  rng = np.random.default_rng(0)
  rows = [ss.score(tok.decode(rng.integers(0, tok.n_codes, (8, 8, 8))),
                   synthetic.generate(4, i, CFG).caption, CFG) for i in range(80)]
  m, chance = ss.mean_scores(rows), ss.chance(CFG)
  for key in ("color_acc", "direction_acc"):
    assert abs(m[key] - chance[key]) < 0.12, (key, m[key])
  assert m["shape_acc"] < chance["shape_acc"] / 2  # random fragments fit no template well
  assert m["temporal_consistency"] < 0.1


def test_blobs_and_fills_have_no_shape(samples):
  """A frame filled with the caption's colour, or an object twice the dataset's size, is no
  shape: templates come at the dataset's sizes and need IoU >= MIN_SHAPE_IOU."""
  s, video = next((s, v) for s, v in samples if s.shape == "square")
  filled = np.where(np.ones_like(video[..., :1], bool), video.max((1, 2), keepdims=True), video)
  r = ss.score(filled, s.caption, CFG)
  assert r["color_acc"] == 1 and r["shape_acc"] == 0 and r["temporal_consistency"] == 0
  big = np.zeros_like(video)
  big[:, 2:30, 2:30] = video.max((1, 2))[:, None, None]  # a 28-px square (sizes: 10, 14 px)
  r = ss.score(big, s.caption, CFG, s.video)
  assert r["shape_acc"] == 0 and r["area_ratio"] == pytest.approx((28 / s.size) ** 2)
  assert "area_ratio" not in ss.score(big, s.caption, CFG)  # only against the true video
  assert ss.score(video, s.caption, CFG)["shape_acc"] == 1


def test_largest_component_is_four_connected():
  mask = np.zeros((6, 6), bool)
  mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: two components of 1
  mask[3:5, 3:6] = True
  comp = ss.largest_component(mask)
  assert comp.sum() == 6 and comp[3:5, 3:6].all()
  assert not ss.largest_component(np.zeros((4, 4), bool)).any()
