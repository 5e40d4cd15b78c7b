"""AR-DF masking (LUMOS_REFERENCE.md sections 3 and 4.4): training masks, inference history mask.

Training (host side, numpy, one call per sample):
  tube:      one ratio r = max(cos(pi/2 * u), min_ratio) per sample; one random pattern over the
             first frame's H x (W + 1) content slots (newlines included), tiled over the content
             slots of every frame, first frame included. Masked slots become MASK.
  random:    the same ratio, round(r * N) slots drawn independently over all N content slots.
  per_frame: an independent ratio and pattern per frame (diffusion-forcing style ablation).
             With `history_prob` > 0, that fraction of samples instead masks every frame before a
             uniform cut c in [1, frames) at exactly `history_ratio` (the sampler's history mask
             ratio), to train on history as the sampler shows it (on the demo: no gain, README).
The loss counts only masked code slots (a masked newline is input noise, never a target).

Inference: `history_pattern(slots, rho)` is the official evenly spaced pattern (n = max(1,
round(rho * slots)) indices round(k * slots / n)); `apply_frame_pattern` writes any per-frame
pattern into chosen frames, and is what both the tube mask and the sampler's history masking go
through.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lumos_jax.tokens import Layout, Vocab

KINDS = ("tube", "random", "per_frame")
SCHEDULES = ("cosine", "linear")


@dataclasses.dataclass(frozen=True)
class MaskConfig:
  kind: str = "tube"
  schedule: str = "cosine"  # r = cos(pi/2 * u) (official) or 1 - u, then clipped below
  min_ratio: float = 0.7
  history_prob: float = 0.0  # per_frame only: share of samples whose leading frames are "history"
  history_ratio: float = 0.7  # those frames' ratio; the sampler's default history_mask

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"mask.kind={self.kind!r}: choose one of {KINDS}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"mask.schedule={self.schedule!r}: choose one of {SCHEDULES}")
    for name in ("min_ratio", "history_prob", "history_ratio"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"mask.{name}={getattr(self, name)} must lie in [0, 1]")
    if self.history_prob > 0 and self.kind != "per_frame":
      raise ValueError(f"mask.history_prob={self.history_prob} needs mask.kind='per_frame' "
                       f"(got {self.kind!r}): tube and random masks have no per-frame ratios")


def mask_ratio(u, cfg: MaskConfig):
  """Masking ratio for uniform draws u in [0, 1): the schedule clipped below at cfg.min_ratio."""
  r = np.cos(np.pi / 2 * np.asarray(u)) if cfg.schedule == "cosine" else 1.0 - np.asarray(u)
  return np.maximum(r, cfg.min_ratio)


def _count(slots: int, ratio: float) -> int:
  return max(1, int(np.round(slots * ratio)))  # numpy rounds half to even, as the official code


def random_pattern(rng: np.random.Generator, slots: int, ratio: float) -> np.ndarray:
  """bool [slots]: round(ratio * slots) (at least 1) slots drawn uniformly without replacement."""
  pattern = np.zeros(slots, bool)
  pattern[rng.permutation(slots)[:_count(slots, ratio)]] = True
  return pattern


def history_pattern(slots: int, rho: float) -> np.ndarray:
  """bool [slots]: the official evenly spaced inference mask (no random offset)."""
  n = max(1, round(rho * slots))
  pattern = np.zeros(slots, bool)
  pattern[[round(k * slots / n) for k in range(n)]] = True
  return pattern


def frame_slot_index(layout: Layout) -> np.ndarray:
  """int [L]: a content slot's index within its frame (row * (W + 1) + col), -1 elsewhere."""
  width = np.zeros_like(layout.col)
  for f in np.unique(layout.frame[layout.content]):  # W + 1 = newline column + 1, per frame
    in_f = layout.content & (layout.frame == f)
    width[in_f] = layout.col[in_f].max() + 1
  return np.where(layout.content, layout.row * width + layout.col, -1)


def apply_frame_pattern(ids: np.ndarray, layout: Layout, pattern: np.ndarray, vocab: Vocab,
                        frames=None) -> tuple[np.ndarray, np.ndarray]:
  """Replaces the slots `pattern` marks (indexed by `frame_slot_index`, tiled when a frame has
  more slots) with MASK in every frame, or only in `frames`. Returns (ids, masked bool [L])."""
  slot = frame_slot_index(layout)
  masked = layout.content & pattern[np.maximum(slot, 0) % len(pattern)]
  if frames is not None:
    masked &= np.isin(layout.frame, frames)
  return np.where(masked, vocab.mask, ids).astype(ids.dtype), masked


def history_end(rng: np.random.Generator, n_frames: int, cfg: MaskConfig) -> int:
  """How many leading frames a per_frame sample masks at cfg.history_ratio: 0 with probability
  1 - cfg.history_prob (and for single frames), else uniform in [1, n_frames). Draws nothing from
  `rng` when history_prob is 0, so such masks stay as they were."""
  if cfg.history_prob == 0 or n_frames < 2 or rng.random() >= cfg.history_prob:
    return 0
  return int(rng.integers(1, n_frames))


def ardf_mask(ids: np.ndarray, layout: Layout, rng: np.random.Generator, cfg: MaskConfig,
              vocab: Vocab) -> dict:
  """Masks one sample for AR-DF training.

  Returns a dict of int32/float32 [L] arrays: `inputs` (ids with masked slots = MASK), `targets`
  (the original ids), `weights` (1.0 on masked code slots, else 0), and the sample's `ratio`.
  A sample without frames comes back unmasked with zero weights.
  """
  ids = np.asarray(ids)
  content = layout.content
  masked = np.zeros(len(ids), bool)
  ratio = float(mask_ratio(rng.random(), cfg))
  if content.any():
    if cfg.kind == "tube":
      first = content & (layout.frame == layout.frame[content][0])
      pattern = random_pattern(rng, int(first.sum()), ratio)
      masked = apply_frame_pattern(ids, layout, pattern, vocab)[1]
    elif cfg.kind == "random":
      masked[np.flatnonzero(content)] = random_pattern(rng, int(content.sum()), ratio)
    else:  # per_frame: its own ratio and pattern for every frame
      frames = np.unique(layout.frame[content])
      n_history = history_end(rng, len(frames), cfg)
      for i, f in enumerate(frames):
        in_f = np.flatnonzero(content & (layout.frame == f))
        r = cfg.history_ratio if i < n_history else float(mask_ratio(rng.random(), cfg))
        masked[in_f] = random_pattern(rng, len(in_f), r)
  inputs = np.where(masked, vocab.mask, ids).astype(np.int32)
  weights = (masked & layout.code).astype(np.float32)
  return {"inputs": inputs, "targets": ids.astype(np.int32), "weights": weights, "ratio": ratio}
