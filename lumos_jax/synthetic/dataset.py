"""The embedded default dataset: procedural videos of one coloured shape moving in a straight line.

Every sample is generated from `(seed, index)` alone: one shape (circle, square, triangle, diamond)
of one colour moves at a constant speed (pixels per frame) left, right, up or down over a black
background, staying wholly inside the frame, and is captioned "a red circle moves left". Its
ground truth (shape, colour, direction, speed, size, per-frame centres) stays on the `Sample` for
evaluation.

Shapes are drawn with hard edges on a grid of *cells* of `patch_px // cells_per_patch` pixels:
each pixel takes the colour of its cell, and a cell is inside the shape when its centre is. A
patch of `patch_px` pixels is therefore k x k cells (k = `cells_per_patch`, 2 by default) of at
most two colours (background and the shape's), which the `PatchTokenizer` stores exactly as one
code (colour, k*k-bit cell occupancy): decode(encode(video)) reproduces every generated video bit
for bit. With the defaults (32 x 32 frames, 4-pixel patches, 8 frames) a video is an 8 x 8 latent
grid per frame and about 650 tokens (`to_tokens`) in the official layout with the compact
vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys

import numpy as np

from lumos_jax import tokens
from lumos_jax.data import records
from lumos_jax.progress import Progress
from lumos_jax.synthetic.tokenizer import COLOURS, PALETTE, PatchTokenizer, cell_colours  # noqa: F401

TRAIN_COUNT, EVAL_COUNT = 2000, 64  # the demo's split sizes (config.base, the data command, TFDS)
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Video geometry and what the generator may choose from.

  frame_px: frame height and width in pixels (a multiple of patch_px).
  patch_px: tokenizer patch side in pixels (a multiple of cells_per_patch); the latent grid is
    frame_px // patch_px square.
  cells_per_patch: cells per patch side, 2 (a patch holds 2 x 2 cells: 15 partial-patch codes per
    colour at a shape's edge) or 1 (a patch is one cell: a code is a colour, so a shape's codes
    move with it); a cell is patch_px // cells_per_patch pixels.
  frames, fps: frames per video and the fps written in the sequence (duration = frames // fps).
  sizes: shape widths in cells (odd): with the default 2-px cells 5 and 7 cells = 10 and 14 px.
  speeds: speeds in pixels per frame; only (size, speed) pairs whose path fits the frame are drawn.
  distractors: uncaptioned objects per video (the harder variant the ablations use): each a shape of
    `distractor_size` cells (smaller than every captioned size, so the captioned object stays the
    frame's dominant colour) in another colour, moving its own way at its own speed, drawn first,
    so the captioned object occludes it. Where two colours share a tokenizer patch the patch keeps
    its more frequent one: such videos are no longer exact round trips (`evaluate`'s "dataset
    videos" row is the ceiling this leaves).
  """
  frame_px: int = 32
  patch_px: int = 4
  cells_per_patch: int = 2
  frames: int = 8
  fps: int = 4
  shapes: tuple[str, ...] = SHAPES
  colours: tuple[str, ...] = tuple(COLOURS)
  directions: tuple[str, ...] = tuple(DIRECTIONS)
  sizes: tuple[int, ...] = (5, 7)
  speeds: tuple[int, ...] = (1, 2, 3)
  distractors: int = 0
  distractor_size: int = 3

  def __post_init__(self):
    if self.cells_per_patch not in (1, 2):
      raise ValueError(f"cells_per_patch={self.cells_per_patch}: expected 1 or 2")
    if (self.patch_px < self.cells_per_patch or self.patch_px % self.cells_per_patch
        or self.frame_px % self.patch_px):
      raise ValueError(f"patch_px={self.patch_px} must be a multiple of cells_per_patch="
                       f"{self.cells_per_patch} and divide frame_px={self.frame_px}")
    for name, known in (("shapes", SHAPES), ("colours", COLOURS), ("directions", DIRECTIONS)):
      unknown = set(getattr(self, name)) - set(known)
      if unknown or not getattr(self, name):
        raise ValueError(f"{name}={getattr(self, name)}: choose a non-empty subset of "
                         f"{tuple(known)}")
    if self.frames < 1 or self.fps < 1:
      raise ValueError(f"frames={self.frames} and fps={self.fps} must be positive")
    if any(s < 1 or s % 2 == 0 for s in self.sizes) or any(v < 1 for v in self.speeds):
      raise ValueError(f"sizes {self.sizes} must be odd cell counts and speeds {self.speeds} >= 1")
    if self.distractors < 0 or self.distractors >= len(self.colours):
      raise ValueError(f"distractors={self.distractors}: need 0 <= distractors < "
                       f"{len(self.colours)} (each takes a colour the caption does not)")
    if self.distractors and not (self.distractor_size % 2 and
                                 1 <= self.distractor_size < min(self.sizes)):
      raise ValueError(f"distractor_size={self.distractor_size} must be odd and below the "
                       f"captioned sizes {self.sizes}")
    if not self.motions:
      raise ValueError(f"no (size, speed) in {self.sizes} x {self.speeds} fits {self.frames} "
                       f"frames of {self.frame_px} px (size * {self.cell_px} + speed * (frames - 1)"
                       f" <= frame_px)")

  @property
  def cell_px(self) -> int:
    return self.patch_px // self.cells_per_patch

  @property
  def grid(self) -> int:
    """Latent grid side: codes per frame row/column."""
    return self.frame_px // self.patch_px

  @property
  def duration(self) -> int:
    return self.frames // self.fps

  @property
  def motions(self) -> list[tuple[int, int]]:
    """(size in cells, speed in px/frame) pairs whose whole path fits inside the frame."""
    return self.motions_of(self.sizes)

  def motions_of(self, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """(size, speed) pairs of the given sizes (in cells) whose whole path fits inside the frame."""
    return [(s, v) for s in sizes for v in self.speeds
            if s * self.cell_px + v * (self.frames - 1) <= self.frame_px]


@dataclasses.dataclass
class Sample:
  """One generated video and its ground truth.

  video:   uint8 [T, H, W, 3].
  caption: f"a {colour} {shape} moves {direction}".
  speed:   pixels per frame along `direction`; size: shape width (= height) in pixels.
  centres: float32 [T, 2] true centre (y, x) in pixels per frame, a straight line at `speed`
    (pixel (i, j) spans [i, i + 1) x [j, j + 1)). The drawn shape's bounding box is centred on the
    centre of the cell holding centres[t]: drawn - centres[t] lies in (-cell_px / 2, cell_px / 2]
    per axis (`locate` measures it), so the drawn shape moves in whole cells, e.g. at 1 px/frame
    one 2-pixel cell every other frame.
  """
  video: np.ndarray
  caption: str
  shape: str
  colour: str
  direction: str
  speed: int
  size: int
  centres: np.ndarray


def shape_cells(shape: str, di: np.ndarray, dj: np.ndarray, h: int) -> np.ndarray:
  """Cells (row offset di, column offset dj from the centre cell) inside a shape of half-width h.

  Every shape's bounding box is exactly [-h, h] x [-h, h], so its centre is the centre cell.
  """
  if shape == "circle":
    return di * di + dj * dj <= (h + 0.5) ** 2
  if shape == "square":
    return np.maximum(abs(di), abs(dj)) <= h
  if shape == "triangle":  # apex up, base on the bottom row
    return (abs(di) <= h) & (2 * abs(dj) <= di + h)
  if shape == "diamond":
    return abs(di) + abs(dj) <= h
  raise ValueError(f"unknown shape {shape!r}")


def _path(rng, cfg: SyntheticConfig, size: int, speed: int, direction: str) -> np.ndarray:
  """float [T, 2] centres (y, x) in px: a straight line at `speed` from a random cell centre such
  that a shape `size` cells wide stays wholly inside every frame."""
  c = cfg.cell_px
  half, travel = size * c / 2, speed * (cfg.frames - 1)
  cell_centres = (np.arange(cfg.frame_px // c) + 0.5) * c
  start = []
  for d in DIRECTIONS[direction]:
    lo, hi = half + max(0, -d * travel), cfg.frame_px - half - max(0, d * travel)
    start.append(rng.choice(cell_centres[(cell_centres >= lo) & (cell_centres <= hi)]))
  step = speed * np.asarray(DIRECTIONS[direction])
  return np.asarray(start) + np.arange(cfg.frames)[:, None] * step


def _draw(video: np.ndarray, cfg: SyntheticConfig, shape: str, size: int, centres: np.ndarray,
          colour: str) -> None:
  """Paints the shape (`size` cells wide) centred on the cells holding `centres` into `video`."""
  c, n_cells = cfg.cell_px, cfg.frame_px // cfg.cell_px
  cell = np.floor(centres / c).astype(np.int64)  # [T, 2] cell holding each centre
  rows = np.arange(n_cells)
  inside = shape_cells(shape, rows[None, :, None] - cell[:, 0, None, None],
                       rows[None, None, :] - cell[:, 1, None, None], (size - 1) // 2)
  video[inside.repeat(c, axis=1).repeat(c, axis=2)] = COLOURS[colour]


def generate(seed: int, index: int, cfg: SyntheticConfig = SyntheticConfig()) -> Sample:
  """Sample `index` of the dataset `seed`: the same (seed, index, cfg) always gives the same one.
  (With `distractors=0` the draws, and so every video, are those of the original generator.)"""
  rng = np.random.default_rng((seed, index))
  shape = cfg.shapes[rng.integers(len(cfg.shapes))]
  colour = cfg.colours[rng.integers(len(cfg.colours))]
  direction = cfg.directions[rng.integers(len(cfg.directions))]
  size, speed = cfg.motions[rng.integers(len(cfg.motions))]
  centres = _path(rng, cfg, size, speed, direction)
  video = np.broadcast_to(PALETTE[0], (cfg.frames, cfg.frame_px, cfg.frame_px, 3)).copy()
  others = [k for k in cfg.colours if k != colour]
  d_motions = cfg.motions_of((cfg.distractor_size,))
  for k in rng.permutation(len(others))[:cfg.distractors]:  # any shape, any way: never captioned
    d_size, d_speed = d_motions[rng.integers(len(d_motions))]
    d_dir = tuple(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    _draw(video, cfg, SHAPES[rng.integers(len(SHAPES))], d_size, _path(rng, cfg, d_size, d_speed,
                                                                       d_dir), others[k])
  _draw(video, cfg, shape, size, centres, colour)  # last: the captioned object is on top
  return Sample(video=video, caption=caption_of(colour, shape, direction), shape=shape,
                colour=colour, direction=direction, speed=int(speed), size=int(size * cfg.cell_px),
                centres=centres.astype(np.float32))


def to_tokens(sample: Sample, tokenizer: PatchTokenizer,
              vocab: tokens.Vocab | None = None) -> np.ndarray:
  """The sample as int32 [L] token ids in the official layout (caption as byte-level text).

  vocab defaults to `tokens.Vocab.compact()` (size_unit 1, so an 8 x 8 grid gets size tokens 8).
  """
  vocab = vocab or tokens.Vocab.compact()
  if tokenizer.n_codes > vocab.visual_size:
    raise ValueError(f"{tokenizer.n_codes} codes exceed the vocabulary's {vocab.visual_size}")
  cfg = tokenizer.cfg
  return tokens.build(vocab.encode_text(sample.caption), tokenizer.encode(sample.video),
                      fps=cfg.fps, duration=cfg.duration, vocab=vocab, close=True)


def caption_of(colour: str, shape: str, direction: str) -> str:
  """The caption of a video ("a red circle moves left"; `parse_caption` reads it back)."""
  return f"a {colour} {shape} moves {direction}"


def max_length(cfg: SyntheticConfig, vocab: tokens.Vocab | None = None) -> int:
  """The most tokens a video of `cfg` takes (`to_tokens` of the longest caption): the
  `data.seq_len` that holds every one of them unpacked."""
  vocab = vocab or tokens.Vocab.compact()
  caption = caption_of(*(max(words, key=len) for words in (cfg.colours, cfg.shapes,
                                                           cfg.directions)))
  codes = np.zeros((cfg.frames, cfg.grid, cfg.grid), np.int32)
  return len(tokens.build(vocab.encode_text(caption), codes, fps=cfg.fps, duration=cfg.duration,
                          vocab=vocab, close=True))


_CAPTION = re.compile(r"a (\w+) (\w+) moves (\w+)")


def parse_caption(caption: str) -> dict[str, str]:
  """Reads a caption back: "a red circle moves left" -> {"colour": "red", "shape": "circle",
  "direction": "left"}.

  Raises ValueError for any other text or unknown words.
  """
  m = _CAPTION.fullmatch(caption.strip())
  if not m or m[1] not in COLOURS or m[2] not in SHAPES or m[3] not in DIRECTIONS:
    raise ValueError(f"not a synthetic caption: {caption!r}")
  return {"colour": m[1], "shape": m[2], "direction": m[3]}


def locate(video: np.ndarray) -> np.ndarray:
  """float [T, 2] bounding-box centre (y, x) of the non-background pixels per frame, NaN if none.

  For a `generate` video this is the centre of the cell holding `Sample.centres[t]` (see `Sample`).
  """
  fg = (np.asarray(video) != PALETTE[0]).any(-1)  # [T, H, W]
  out = np.full((len(fg), 2), np.nan)
  for t, m in enumerate(fg):
    if m.any():
      for a in (0, 1):
        idx = np.flatnonzero(m.any(axis=1 - a))
        out[t, a] = (idx[0] + idx[-1] + 1) / 2
  return out


def to_record(sample: Sample, index: int, tokenizer: PatchTokenizer, vocab: tokens.Vocab):
  """The sample as a `records.Record` (id "synthetic-<index>", caption and sizes filled in)."""
  grid = tokenizer.cfg.grid
  return records.Record(tokens=to_tokens(sample, tokenizer, vocab), id=f"synthetic-{index}",
                        caption=sample.caption, fps=tokenizer.cfg.fps,
                        duration=tokenizer.cfg.duration, frames=tokenizer.cfg.frames,
                        latent_h=grid, latent_w=grid, source="synthetic")


def samples(count: int, seed: int, cfg: SyntheticConfig = SyntheticConfig(), progress=None):
  """Records of samples 0..count-1 of the dataset `seed`, in the compact vocabulary (a generator:
  the one source of the dataset for the record writer and the TFDS builder)."""
  tokenizer, vocab = PatchTokenizer(cfg), tokens.Vocab.compact()
  for i in range(count):
    yield to_record(generate(seed, i, cfg), i, tokenizer, vocab)
    if progress:
      progress(i + 1, 0)


def write(out_dir, count: int, seed: int, cfg: SyntheticConfig = SyntheticConfig(),
          shard_size: int = records.DEFAULT_SHARD_SIZE, log=sys.stderr) -> int:
  """Writes samples 0..count-1 of the dataset `seed` as a record directory; returns the count.

  Progress lines (rate, ETA) go to `log`. The metadata records the generator settings.
  """
  progress = Progress(count, "synthetic", log) if log else None
  return records.write_records(out_dir, samples(count, seed, cfg, progress), shard_size=shard_size,
                               vocab=tokens.Vocab.compact(),
                               args=_settings(count, seed, cfg))


def _settings(count: int, seed: int, cfg: SyntheticConfig) -> dict:
  """The generator settings `write` records in a record directory's metadata (JSON types)."""
  return json.loads(json.dumps({"command": "synthetic", **dataclasses.asdict(cfg), "seed": seed,
                                "count": count}))


def check_written(out_dir, count: int, seed: int, cfg: SyntheticConfig) -> None:
  """Raises ValueError if the record directory `out_dir` (written by `write`) holds other videos
  than `write(out_dir, count, seed, cfg)` would: a rerun in a workdir whose dataset was generated
  for another config must not train on the old videos silently. A generator field the metadata
  lacks (a directory written before the field existed) was its default then."""
  written = records.read_metadata(out_dir).get("args", {})
  if written:
    written = {**_settings(0, 0, SyntheticConfig()), "count": count, "seed": seed, **written}
  wanted = _settings(count, seed, cfg)
  differ = {k: (written[k], v) for k, v in wanted.items() if k in written and written[k] != v}
  if differ:
    listed = ", ".join(f"{k}={old} (config: {new})" for k, (old, new) in differ.items())
    raise ValueError(f"{out_dir} was generated with other settings: {listed}. Delete that "
                     "directory (it is regenerated) or train in a fresh workdir")


def config_of_run(run_cfg) -> SyntheticConfig:
  """The video geometry of a training run on this dataset: the written videos cut to
  data.max_frames frames."""
  written = written_config(run_cfg)
  return dataclasses.replace(written, frames=min(written.frames, run_cfg.data.max_frames))


def use_geometry(run_cfg, video: SyntheticConfig) -> None:
  """Sets a run config to train on whole videos of `video`'s geometry and motions (what
  `written_config` reads back): data.synthetic_frame_px, synthetic_frames,
  synthetic_cells_per_patch, synthetic_sizes, synthetic_speeds and synthetic_distractors;
  data.max_frames (every frame); data.seq_len (the longest video, `max_length`, rounded up to 8);
  model.max_lookahead (one frame block)."""
  run_cfg.data.update(synthetic_frame_px=video.frame_px, synthetic_frames=video.frames,
                      synthetic_cells_per_patch=video.cells_per_patch,
                      synthetic_sizes=video.sizes, synthetic_speeds=video.speeds,
                      synthetic_distractors=video.distractors, max_frames=video.frames,
                      seq_len=-(-max_length(video) // 8) * 8)
  run_cfg.model.max_lookahead = tokens.frame_block_length(video.grid, video.grid) - 1


def written_config(run_cfg) -> SyntheticConfig:
  """The generator settings a training run writes its dataset with (the pipeline cuts the videos
  to data.max_frames): data.synthetic_distractors, data.synthetic_sizes and synthetic_speeds (()
  keeps the generator's), data.synthetic_frame_px, synthetic_frames and synthetic_cells_per_patch
  (0 keeps the generator's). Raises ValueError when no video fits them (`SyntheticConfig`)."""
  d = run_cfg.data
  geometry = {"sizes": tuple(d.get("synthetic_sizes", ())) or SyntheticConfig.sizes,
              "speeds": tuple(d.get("synthetic_speeds", ())) or SyntheticConfig.speeds,
              "frame_px": d.get("synthetic_frame_px", 0) or SyntheticConfig.frame_px,
              "frames": d.get("synthetic_frames", 0) or SyntheticConfig.frames,
              "cells_per_patch": (d.get("synthetic_cells_per_patch", 0)
                                  or SyntheticConfig.cells_per_patch)}
  return SyntheticConfig(distractors=d.get("synthetic_distractors", 0), **geometry)
