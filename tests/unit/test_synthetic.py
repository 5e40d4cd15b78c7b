"""The embedded synthetic dataset: determinism, ground truth, tokenizer, sequences and GIFs."""
import collections
import json

import imageio.v3 as iio
import numpy as np
import pytest
from absl import app

from lumos_jax import tokens
from lumos_jax.synthetic import dataset as synthetic, video as synthetic_gif
from lumos_jax.synthetic.dataset import SyntheticConfig

VOCAB = tokens.Vocab.compact()
CFG = SyntheticConfig()
TOKENIZER = synthetic.PatchTokenizer(CFG)


def test_generate_is_deterministic():
  for index in range(5):
    a, b = synthetic.generate(7, index), synthetic.generate(7, index)
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.caption == b.caption and a.speed == b.speed and a.size == b.size
  videos = [synthetic.generate(7, i).video for i in range(20)]
  assert all(not np.array_equal(videos[0], v) for v in videos[1:])
  assert not np.array_equal(synthetic.generate(8, 0).video, videos[0])
  s = synthetic.generate(7, 0)
  assert s.video.shape == (8, 32, 32, 3) and s.video.dtype == np.uint8
  assert s.centres.shape == (8, 2)


def test_ground_truth_matches_video():
  c, t = CFG.cell_px, CFG.frames
  for index in range(100):
    s = synthetic.generate(3, index)
    fg = (s.video != synthetic.PALETTE[0]).any(-1)
    colour = np.broadcast_to(synthetic.COLOURS[s.colour], (fg.sum(), 3))
    np.testing.assert_array_equal(s.video[fg], colour)  # one colour on the background
    assert len(set(fg.sum(axis=(1, 2)).tolist())) == 1  # same shape every frame: never clipped
    assert fg[0].any(axis=1).sum() == fg[0].any(axis=0).sum() == s.size
    drawn = synthetic.locate(s.video)
    np.testing.assert_array_equal(drawn, (np.floor(s.centres / c) + 0.5) * c)
    offset = drawn - s.centres
    assert (offset > -c / 2).all() and (offset <= c / 2).all()
    # the true trajectory is a straight line at `speed` in `direction`
    step = np.diff(s.centres, axis=0)
    np.testing.assert_array_equal(step, np.broadcast_to(
        s.speed * np.array(synthetic.DIRECTIONS[s.direction]), (t - 1, 2)))
    dy, dx = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[s.direction]
    assert np.sign(step[0]).tolist() == [dy, dx]  # rows grow downwards
    # and the drawn shape follows it: displacement over the video within one cell
    moved = drawn[-1] - drawn[0]
    assert abs(moved @ np.array(synthetic.DIRECTIONS[s.direction]) - s.speed * (t - 1)) <= c
    assert (np.abs(moved) > 0).sum() == 1  # nothing moves across the direction


SHAPES_5 = {  # 5-cell shapes as drawn (one character per cell)
    "circle": [".###.", "#####", "#####", "#####", ".###."],
    "square": ["#####"] * 5,
    "triangle": ["..#..", "..#..", ".###.", ".###.", "#####"],
    "diamond": ["..#..", ".###.", "#####", ".###.", "..#.."],
}


def test_shapes_as_drawn():
  c = CFG.cell_px
  crops = collections.defaultdict(set)
  for index in range(200):
    s = synthetic.generate(4, index)
    fg = (s.video[0] != synthetic.PALETTE[0]).any(-1)[::c, ::c]  # one pixel per cell
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    crop = fg[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    crops[s.shape, s.size].add(tuple("".join(".#"[int(v)] for v in r) for r in crop))
  for shape, art in SHAPES_5.items():
    assert crops[shape, 5 * c] == {tuple(art)}
  big = [crops[shape, 7 * c] for shape in synthetic.SHAPES]
  assert all(len(x) == 1 for x in big) and len(set.union(*big)) == 4  # one look each, all distinct


def test_caption_matches_ground_truth():
  seen = collections.defaultdict(set)
  for index in range(300):
    s = synthetic.generate(0, index)
    assert s.caption == f"a {s.colour} {s.shape} moves {s.direction}"
    assert synthetic.parse_caption(s.caption) == {"colour": s.colour, "shape": s.shape,
                                                  "direction": s.direction}
    for key in ("colour", "shape", "direction", "speed", "size"):
      seen[key].add(getattr(s, key))
  assert seen["colour"] == set(synthetic.COLOURS) and seen["shape"] == set(synthetic.SHAPES)
  assert seen["direction"] == set(synthetic.DIRECTIONS)
  assert seen["speed"] == {1, 2, 3} and seen["size"] == {10, 14}
  for bad in ("a red circle moves", "a pink circle moves left", "a red cube moves left",
              "a red circle moves sideways", "the red circle moves left"):
    with pytest.raises(ValueError, match="not a synthetic caption"):
      synthetic.parse_caption(bad)


def test_tokenizer_round_trip_is_exact():
  videos = np.stack([synthetic.generate(1, i).video for i in range(200)])  # [200, T, H, W, 3]
  codes = TOKENIZER.encode(videos)
  assert codes.shape == (200, 8, 8, 8) and codes.dtype == np.int32
  assert codes.min() == 0 and codes.max() < TOKENIZER.n_codes <= VOCAB.visual_size
  assert len(np.unique(codes)) > 60  # edges, corners and interiors of every colour
  np.testing.assert_array_equal(TOKENIZER.decode(codes), videos)
  for i in range(3):  # single videos and single frames too
    np.testing.assert_array_equal(TOKENIZER.encode(videos[i, 0]), codes[i, 0])
  noise = np.random.default_rng(0).integers(-23, 24, videos.shape)  # the documented bound
  noisy = np.clip(videos.astype(int) + noise, 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(TOKENIZER.encode(noisy), codes)
  with pytest.raises(ValueError, match="codes must lie in"):
    TOKENIZER.decode(np.array([[TOKENIZER.n_codes]]))


def test_tokenizer_projects_other_frames():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  codes = TOKENIZER.encode(frames)
  assert codes.min() >= 0 and codes.max() < TOKENIZER.n_codes
  np.testing.assert_array_equal(TOKENIZER.encode(TOKENIZER.decode(codes)), codes)  # a projection
  # a patch with 3 red cells and 1 blue cell keeps red on those 3 cells (mask 1 + 2 + 4)
  patch = np.zeros((1, 4, 4, 3), np.uint8)
  patch[:] = synthetic.COLOURS["red"]
  patch[0, 2:, 2:] = synthetic.COLOURS["blue"]
  red = list(synthetic.COLOURS).index("red")
  assert TOKENIZER.encode(patch)[0, 0, 0] == 1 + 15 * red + 7 - 1
  assert TOKENIZER.encode(np.zeros((4, 4, 3), np.uint8))[0, 0] == 0


def test_one_cell_patches_code_the_palette_and_move_with_the_shape():
  """cells_per_patch=1: a code is the cell's palette index (9 codes), every video round-trips,
  and each frame's codes are the frame before shifted by the cells the shape moved."""
  cfg = SyntheticConfig(frame_px=32, frames=4, cells_per_patch=1)
  tok = synthetic.PatchTokenizer(cfg)
  assert (tok.n_codes, cfg.cell_px, cfg.grid) == (1 + len(synthetic.COLOURS), 4, 8)
  for index in range(40):
    s = synthetic.generate(3, index, cfg)
    codes = tok.encode(s.video)
    np.testing.assert_array_equal(tok.decode(codes), s.video)
    colour_code = 1 + list(synthetic.COLOURS).index(s.colour)
    np.testing.assert_array_equal(np.unique(codes), [0, colour_code])
    cells = np.floor(s.centres / cfg.cell_px).astype(int)  # [T, 2] the cell holding each centre
    for t in range(1, cfg.frames):
      moved = np.roll(codes[t - 1], tuple(cells[t] - cells[t - 1]), axis=(0, 1))
      np.testing.assert_array_equal(codes[t], moved)
  with pytest.raises(ValueError, match="cells_per_patch=3: expected 1 or 2"):
    SyntheticConfig(cells_per_patch=3)
  with pytest.raises(ValueError, match="patch_px=3 must be a multiple of cells_per_patch=2"):
    SyntheticConfig(patch_px=3, frame_px=33)


def test_sequence_parses_in_the_official_layout():
  for index in range(10):
    s = synthetic.generate(2, index)
    ids = synthetic.to_tokens(s, TOKENIZER, VOCAB)
    lay = tokens.parse(ids, VOCAB)
    assert lay.frame.max() == CFG.frames - 1
    assert lay.row.max() == 7 and lay.col[lay.code].max() == 7
    text = ids[1:np.flatnonzero(ids == VOCAB.sep)[0]]
    assert VOCAB.decode_text(text) == s.caption
    start = np.flatnonzero(ids == VOCAB.video_start)[0]
    assert ids[start + 1:start + 3].tolist() == [VOCAB.number(2), VOCAB.number(4)]  # duration, fps
    np.testing.assert_array_equal(ids[lay.code].reshape(8, 8, 8) - VOCAB.visual_offset,
                                  TOKENIZER.encode(s.video))
    assert ids[-2:].tolist() == [VOCAB.video_end, VOCAB.sep]


@pytest.mark.parametrize("frame_px,patch_px,frames", [(64, 8, 12), (64, 4, 8), (48, 6, 4)])
def test_larger_configs(frame_px, patch_px, frames):
  cfg = SyntheticConfig(frame_px=frame_px, patch_px=patch_px, frames=frames, speeds=(1, 2, 4))
  tok = synthetic.PatchTokenizer(cfg)
  grid = frame_px // patch_px
  for index in range(10):
    s = synthetic.generate(0, index, cfg)
    assert s.video.shape == (frames, frame_px, frame_px, 3)
    codes = tok.encode(s.video)
    assert codes.shape == (frames, grid, grid)
    np.testing.assert_array_equal(tok.decode(codes), s.video)
    lay = tokens.parse(synthetic.to_tokens(s, tok, VOCAB), VOCAB)
    assert lay.frame.max() == frames - 1 and lay.row.max() == grid - 1


def test_config_validation():
  for bad in (dict(patch_px=3), dict(frame_px=30), dict(shapes=("hexagon",)), dict(colours=()),
              dict(sizes=(4,)), dict(speeds=(0,)), dict(fps=0), dict(sizes=(15,), speeds=(3,))):
    with pytest.raises(ValueError):
      SyntheticConfig(**bad)
  assert SyntheticConfig(sizes=(7,)).motions == [(7, 1), (7, 2)]  # 14 + 3 * 7 > 32 px: no speed 3


def test_gif_script(tmp_path, capsys):
  path = tmp_path / "samples.gif"
  synthetic_gif.main([str(path), "--seed=5", "--count=3", "--scale=2"])
  frames = iio.imread(path)  # [T, H, W, 3 or 4]
  expected, captions = synthetic_gif.sheet(5, 3, 2)
  assert frames.shape[:3] == expected.shape[:3] == (8, 3 * 64, 64 + synthetic_gif.CAPTION_PX)
  video = frames[..., :3][:, :, :64]  # the video column: palette colours, exact through GIF
  np.testing.assert_array_equal(video, expected[:, :, :64])
  np.testing.assert_array_equal(video[:, :64:2, ::2], synthetic.generate(5, 0).video)
  assert (frames[0, :, 64:, :3] < 128).any()  # caption text drawn in the caption column
  lines = [f"{i}: {synthetic.generate(5, i).caption}" for i in range(3)]
  assert captions == [x.split(": ")[1] for x in lines]
  assert capsys.readouterr().out.splitlines()[1:] == lines
  with pytest.raises(app.UsageError, match="one output path"):
    synthetic_gif.main(["--count=1"])


def test_gif_script_shows_a_configs_videos(tmp_path):
  """--config=demo: the 4 frames of 24 px the demo trains on; --frame_px/--frames override."""
  path = tmp_path / "demo.gif"
  synthetic_gif.main([str(path), "--config=demo", "--count=2", "--scale=1"])
  demo = synthetic.SyntheticConfig(frame_px=24, frames=4)
  frames = iio.imread(path)[..., :3]
  assert frames.shape[:3] == (4, 2 * 24, 24 + synthetic_gif.CAPTION_PX)
  np.testing.assert_array_equal(frames[:, :24, :24], synthetic.generate(0, 0, demo).video)
  synthetic_gif.main([str(path), "--config=demo", "--frames=2", "--count=1", "--scale=1"])
  assert iio.imread(path).shape[:3] == (2, 24, 24 + synthetic_gif.CAPTION_PX)
  with pytest.raises(app.UsageError, match=r"--frame_px=30 .*multiple"):
    synthetic_gif.main([str(path), "--frame_px=30"])
  with pytest.raises(app.UsageError, match="config file .*nope.py not found"):
    synthetic_gif.main([str(path), "--config=nope"])


def test_synthetic_command_writes_records(tmp_path, capsys):
  from lumos_jax.data import __main__ as cli
  from lumos_jax.data import records
  out = tmp_path / "syn"
  assert cli.main(["synthetic", str(out), "--count=12", "--seed=4"]) == 0
  source = records.RecordSource(out)
  assert len(source) == 12 and source.vocab == VOCAB
  for i in (0, 11):
    rec, sample = source[i], synthetic.generate(4, i)
    np.testing.assert_array_equal(rec.tokens, synthetic.to_tokens(sample, TOKENIZER, VOCAB))
    assert rec.caption == sample.caption and (rec.frames, rec.latent_h, rec.latent_w) == (8, 8, 8)
  capsys.readouterr()
  assert cli.main(["inspect", str(out), "--json"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["samples"] == 12 and summary["frames"] == {"8": 12}
  assert summary["resolutions"] == {"8x8": 12} and summary["vocab"] == "compact"


def test_synthetic_command_takes_sizes_and_speeds(tmp_path, capsys):
  """--sizes / --speeds reach the generator (the videos are the SyntheticConfig's) and its
  metadata; a non-integer item or an impossible value is a usage error naming the flag."""
  from lumos_jax.data import __main__ as cli
  from lumos_jax.data import records
  out = tmp_path / "syn"
  assert cli.main(["synthetic", str(out), "--count=3", "--frame_px=24", "--frames=4",
                   "--sizes=5", "--speeds=4"]) == 0
  geometry = SyntheticConfig(frame_px=24, frames=4, sizes=(5,), speeds=(4,))
  tokenizer = synthetic.PatchTokenizer(geometry)
  for i, rec in enumerate(records.RecordSource(out)):
    sample = synthetic.generate(0, i, geometry)
    assert (sample.size, sample.speed) == (5 * geometry.cell_px, 4)
    np.testing.assert_array_equal(rec.tokens, synthetic.to_tokens(sample, tokenizer, VOCAB))
  args = records.read_metadata(out)["args"]
  assert (args["sizes"], args["speeds"]) == ([5], [4])
  capsys.readouterr()
  for flag, message in (("--sizes=5,x", "--sizes=5,x: expected integers separated by commas"),
                        ("--speeds=0", "speeds (0,) >= 1")):
    assert cli.main(["synthetic", str(tmp_path / "bad"), flag]) == 2
    assert message in capsys.readouterr().err


def test_run_config_geometry_and_the_longest_video():
  """data.synthetic_frame_px / synthetic_frames reach the generator (0 keeps its defaults), the run
  sees them cut to data.max_frames, and `max_length` is the longest video any draw gives."""
  from lumos_jax import config
  cfg = config.load("tiny")
  default = synthetic.written_config(cfg)
  assert (default.frame_px, default.frames) == (SyntheticConfig.frame_px, SyntheticConfig.frames)
  cfg.data.update(synthetic_frame_px=24, synthetic_frames=4, max_frames=7)
  written, run_syn = synthetic.written_config(cfg), synthetic.config_of_run(cfg)
  assert (written.frame_px, written.grid, written.frames) == (24, 6, 4)
  assert run_syn.frames == 4  # max_frames 7 cuts nothing from 4-frame videos
  cfg.data.max_frames = 2
  assert synthetic.config_of_run(cfg).frames == 2
  for geometry in (written, SyntheticConfig(frames=2)):
    tokenizer = synthetic.PatchTokenizer(geometry)
    lengths = {len(synthetic.to_tokens(synthetic.generate(0, i, geometry), tokenizer))
               for i in range(300)}
    assert max(lengths) == synthetic.max_length(geometry), (sorted(lengths), geometry)


def test_use_geometry_round_trips_and_speeds_reach_the_generator():
  """`use_geometry` sets every generator field `written_config` reads back (sizes and speeds too),
  and data.synthetic_speeds decides how far the shapes move."""
  from lumos_jax import config
  cfg = config.load("tiny")
  video = SyntheticConfig(frame_px=24, frames=4, sizes=(5,), speeds=(4,))
  synthetic.use_geometry(cfg, video)
  written = synthetic.written_config(cfg)
  assert written == video
  assert {synthetic.generate(0, i, written).speed for i in range(20)} == {4}
  cfg.data.synthetic_speeds = ()  # () keeps the generator's
  assert synthetic.written_config(cfg).speeds == SyntheticConfig.speeds


def test_run_config_sizes_and_a_stale_dataset(tmp_path):
  """data.synthetic_sizes reaches the generator (training data, evaluation, sampler tokenizer),
  and a workdir whose dataset was generated with other settings is refused, naming them."""
  from etils import epath

  from lumos_jax import config
  from lumos_jax.train import loop
  cfg = config.load("tiny")
  cfg.data.update(kind="synthetic", synthetic_count=6, synthetic_eval_count=2)
  assert synthetic.written_config(cfg).sizes == SyntheticConfig().sizes  # () keeps the default
  cfg.data.synthetic_sizes = (7, 9)
  run_syn = synthetic.config_of_run(cfg)
  assert run_syn.sizes == (7, 9) and run_syn.frames == cfg.data.max_frames
  sizes_px = {synthetic.generate(0, i, run_syn).size for i in range(40)}
  assert sizes_px == {7 * run_syn.cell_px, 9 * run_syn.cell_px}
  workdir = epath.Path(tmp_path)
  loop.data_sources(cfg, workdir, config.vocab(cfg))  # writes WORKDIR/data
  loop.data_sources(cfg, workdir, config.vocab(cfg))  # same settings: reused
  cfg.data.synthetic_sizes = (5,)
  with pytest.raises(ValueError, match=r"data/train was generated with other settings: "
                     r"sizes=\[7, 9\] \(config: \[5\]\)"):
    loop.data_sources(cfg, workdir, config.vocab(cfg))
  # a directory written before cells_per_patch existed holds 2-cell patches, the default then
  cfg.data.synthetic_sizes = (7, 9)
  meta = workdir / "data" / "train" / "metadata.json"
  written = json.loads(meta.read_text())
  del written["args"]["cells_per_patch"]
  meta.write_text(json.dumps(written))
  loop.data_sources(cfg, workdir, config.vocab(cfg))
  cfg.data.update(synthetic_cells_per_patch=1, synthetic_frame_px=64)  # 4-px cells: 7 and 9 fit
  with pytest.raises(ValueError, match=r"cells_per_patch=2 \(config: 1\)"):
    loop.data_sources(cfg, workdir, config.vocab(cfg))
