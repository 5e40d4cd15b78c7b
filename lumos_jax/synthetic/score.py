"""Scores a video against a synthetic caption ("a red circle moves left"): what `evaluate` reports.

Works on the *cell grid* (cells of `cell_px` pixels, the finest detail the patch tokenizer
keeps). Per frame (`detect`): the dominant non-background colour, its largest 4-connected component
("the object"), the shape whose template best overlaps that component (IoU over every position of
every shape at the dataset's sizes; none below MIN_SHAPE_IOU), and the component's bounding-box
centre in pixels.

Per video (`score`):
  shape_acc, color_acc   fraction of frames whose detected shape / colour is the caption's (a frame
                         with nothing drawn counts as wrong)
  direction_acc          1 if the least-squares velocity of the object centre points the caption's
                         way (largest axis, sign, at least `MIN_SPEED` px/frame), else 0
  trajectory_error_px    RMS distance of the centres from the best straight, constant-velocity
                         path along the caption's axis (residual of the along-axis linear fit and
                         the cross-axis drift); NaN with fewer than 3 detections
  temporal_consistency   fraction of consecutive frame pairs with the same colour and (detected)
                         shape and object areas within a factor `AREA_RATIO`
  area_ratio             (given the true video) mean over frames with an object of its area
                         over the true object's: the shape scores accept a template match at IoU
                         0.5, so a blob 1.5x too large can still count as its shape; this says
                         how large the drawn objects are
The dataset's own videos score 1, 1, 1, <= 0.5 px, 1, 1 (tests/unit/test_evaluate.py).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from lumos_jax.synthetic import dataset
from lumos_jax.synthetic.tokenizer import COLOURS, PALETTE, cell_colours

MIN_SPEED = 0.25  # px/frame below which a video counts as not moving
AREA_RATIO = 1.5
# Below this IoU with its best template an object has no shape: fragments and blobs would
# otherwise count as whichever template they overlap most (a quarter right by chance).
MIN_SHAPE_IOU = 0.5
COLOUR_NAMES = tuple(COLOURS)


@dataclasses.dataclass
class Detection:
  """What one frame shows. colour/shape None and centre NaN when nothing is drawn."""
  colour: str | None
  shape: str | None
  shape_iou: float
  centre: np.ndarray  # float [2] (y, x) in pixels
  area: int  # cells in the object


def largest_component(mask: np.ndarray) -> np.ndarray:
  """bool [n, m] largest 4-connected component of a bool [n, m] mask (empty mask -> empty)."""
  labels = np.zeros(mask.shape, np.int32)
  best, best_size, n = 0, 0, 0
  for start in zip(*np.nonzero(mask)):
    if labels[start]:
      continue
    n += 1
    stack, size = [start], 0
    labels[start] = n
    while stack:
      i, j = stack.pop()
      size += 1
      for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
        if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not labels[a, b]:
          labels[a, b] = n
          stack.append((a, b))
    if size > best_size:
      best, best_size = n, size
  return labels == best if best else np.zeros_like(mask)


def _templates(grid: int, half_widths: tuple[int, ...]):
  """{shape: float [k, grid * grid]} every template (half-width h in `half_widths`, centre cell)
  on a grid x grid, flattened so that overlaps with an object are one matmul."""
  rows = np.arange(grid)
  out = {}
  for shape in dataset.SHAPES:
    masks = []
    for h in (h for h in half_widths if 2 * h < grid):
      for ci in range(h, grid - h):
        for cj in range(h, grid - h):
          masks.append(dataset.shape_cells(shape, rows[:, None] - ci, rows[None, :] - cj, h))
    out[shape] = np.stack(masks).reshape(len(masks), -1).astype(np.float32)
  return out


_TEMPLATE_CACHE: dict[tuple, dict] = {}


def classify_shape(obj: np.ndarray, sizes: tuple[int, ...]) -> tuple[str, float]:
  """(best shape, its IoU) for a bool [n, n] object mask, over every placement of every shape at
  the given widths in cells (the dataset's `sizes`: a blob filling the frame is no square)."""
  key = (obj.shape[0], tuple(sorted({(s - 1) // 2 for s in sizes})))
  if key not in _TEMPLATE_CACHE:
    _TEMPLATE_CACHE[key] = _templates(*key)
  templates = _TEMPLATE_CACHE[key]
  best = (None, -1.0)
  flat = obj.reshape(-1).astype(np.float32)
  for shape, masks in templates.items():
    inter = masks @ flat
    iou = float((inter / (masks.sum(1) + flat.sum() - inter)).max())
    if iou > best[1]:
      best = (shape, iou)
  return best


def detect(video: np.ndarray, cfg: dataset.SyntheticConfig) -> list[Detection]:
  """One `Detection` per frame of uint8 [T, H, W, 3] frames."""
  out = []
  for cells in cell_colours(np.asarray(video), cfg.cell_px):
    counts = np.bincount(cells.ravel(), minlength=len(PALETTE))[1:]
    if not counts.any():
      out.append(Detection(None, None, 0.0, np.full(2, np.nan), 0))
      continue
    k = int(counts.argmax())
    obj = largest_component(cells == k + 1)
    shape, iou = classify_shape(obj, cfg.sizes)
    if iou < MIN_SHAPE_IOU:
      shape = None
    ys, xs = np.nonzero(obj)
    centre = np.array([ys.min() + ys.max() + 1, xs.min() + xs.max() + 1]) / 2 * cfg.cell_px
    out.append(Detection(COLOUR_NAMES[k], shape, iou, centre, int(obj.sum())))
  return out


def velocity(centres: np.ndarray) -> np.ndarray:
  """Least-squares px/frame (vy, vx) of float [T, 2] centres (NaN rows skipped); NaN if < 2."""
  t = np.flatnonzero(~np.isnan(centres[:, 0]))
  if len(t) < 2:
    return np.full(2, np.nan)
  return np.polyfit(t, centres[t], 1)[0]


def direction_of(v: np.ndarray) -> str | None:
  """"left"/"right"/"up"/"down" of a (vy, vx) velocity; None if not moving or unknown."""
  if np.isnan(v).any() or np.abs(v).max() < MIN_SPEED:
    return None
  axis = int(np.abs(v).argmax())
  sign = int(np.sign(v[axis]))
  return next(d for d, step in dataset.DIRECTIONS.items() if step[axis] == sign)


def path_offsets(centres: np.ndarray, direction: str) -> np.ndarray:
  """float [T] px distance of each centre from the best constant-velocity line along
  `direction`'s axis (least-squares fit of the along-axis position over time; across the axis,
  the mean position); NaN for frames without a detection and for all with fewer than 3."""
  t = np.flatnonzero(~np.isnan(centres[:, 0]))
  out = np.full(len(centres), math.nan)
  if len(t) < 3:
    return out
  axis = 0 if dataset.DIRECTIONS[direction][0] else 1
  along, across = centres[t, axis], centres[t, 1 - axis]
  fit = np.polyval(np.polyfit(t, along, 1), t)
  out[t] = np.sqrt((along - fit) ** 2 + (across - across.mean()) ** 2)
  return out


def _rms(offsets: np.ndarray) -> float:
  """Root mean square of the non-NaN offsets; NaN when all are NaN."""
  return math.nan if np.isnan(offsets).all() else float(np.sqrt(np.nanmean(offsets ** 2)))


def trajectory_error(centres: np.ndarray, direction: str) -> float:
  """RMS px distance of centres from the best constant-velocity line along `direction`'s axis."""
  return _rms(path_offsets(centres, direction))


def _frames(dets: list[Detection], centres: np.ndarray, truth: dict) -> dict:
  """`per_frame` of detections (their float [T, 2] `centres` stacked) against a parsed caption."""
  return {"shape_acc": np.array([d.shape == truth["shape"] for d in dets], np.float64),
          "color_acc": np.array([d.colour == truth["colour"] for d in dets], np.float64),
          "path_offset_px": path_offsets(centres, truth["direction"])}


def per_frame(video: np.ndarray, caption: str, cfg: dataset.SyntheticConfig) -> dict:
  """What `score` averages, frame by frame: {"shape_acc", "color_acc": float [T] 0/1,
  "path_offset_px": float [T] (`path_offsets`, NaN where undetected)}, for adherence by frame
  index (the ablations: does quality collapse after the first frame?)."""
  dets = detect(video, cfg)
  return _frames(dets, np.stack([d.centre for d in dets]), dataset.parse_caption(caption))


def score(video: np.ndarray, caption: str, cfg: dataset.SyntheticConfig,
          true_video: np.ndarray | None = None) -> dict:
  """Scores of uint8 [T, H, W, 3] frames against a synthetic caption (module docstring);
  `area_ratio` too when the caption's own video `true_video` (same shape) is given."""
  truth = dataset.parse_caption(caption)
  dets = detect(video, cfg)
  centres = np.stack([d.centre for d in dets])
  frames = _frames(dets, centres, truth)
  same = [a.shape is not None and (a.colour, a.shape) == (b.colour, b.shape)
          and max(a.area, b.area) <= AREA_RATIO * min(a.area, b.area)
          for a, b in zip(dets, dets[1:])]
  out = {
      "shape_acc": float(frames["shape_acc"].mean()),
      "color_acc": float(frames["color_acc"].mean()),
      "direction_acc": float(direction_of(velocity(centres)) == truth["direction"]),
      "trajectory_error_px": _rms(frames["path_offset_px"]),
      "temporal_consistency": float(np.mean(same)) if same else 1.0,
      "detected": float(np.mean([d.colour is not None for d in dets])),
  }
  if true_video is not None:
    ratios = [d.area / t.area for d, t in zip(dets, detect(true_video, cfg)) if d.area and t.area]
    out["area_ratio"] = float(np.mean(ratios)) if ratios else math.nan
  return out


def chance(cfg: dataset.SyntheticConfig) -> dict:
  """Accuracy of uniform guessing over the dataset's shapes, colours and directions."""
  return {"shape_acc": 1 / len(cfg.shapes), "color_acc": 1 / len(cfg.colours),
          "direction_acc": 1 / len(cfg.directions)}


def mean_scores(rows: list[dict]) -> dict:
  """Per-key mean over videos (NaN trajectory errors left out; `trajectory_scored` counts them)."""
  out = {k: float(np.nanmean([r[k] for r in rows])) if any(not math.isnan(r[k]) for r in rows)
         else math.nan for k in rows[0]}
  out["trajectory_scored"] = int(sum(not math.isnan(r["trajectory_error_px"]) for r in rows))
  return out
