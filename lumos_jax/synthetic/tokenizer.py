"""The embedded dataset's exact patch tokenizer and its colour palette.

The shapes of `lumos_jax.synthetic.dataset` are drawn on a grid of cells of `cell_px` pixels, each
cell one palette colour; a tokenizer patch is k x k cells (k = `cells_per_patch`, 1 or 2) of at
most two colours, stored exactly as one code (colour, k*k-bit cell occupancy).
"""
from __future__ import annotations

import numpy as np

BACKGROUND = (0, 0, 0)
COLOURS = {  # caption name -> RGB; palette index = 1 + position (0 is the background)
    "red": (230, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "purple": (160, 60, 210), "cyan": (40, 210, 220), "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
PALETTE = np.array([BACKGROUND, *COLOURS.values()], np.uint8)  # [1 + len(COLOURS), 3]


def cell_colours(video: np.ndarray, cell_px: int) -> np.ndarray:
  """uint8 [..., H, W, 3] frames -> int [..., H / cell_px, W / cell_px]: the index of the `PALETTE`
  colour nearest each cell's mean RGB."""
  *lead, h, w, _ = video.shape
  c = cell_px
  mean = video.reshape(*lead, h // c, c, w // c, c, 3).mean(axis=(-4, -2))  # [..., h/c, w/c, 3]
  return ((mean[..., None, :] - PALETTE.astype(np.float64)) ** 2).sum(-1).argmin(-1)


class PatchTokenizer:
  """Deterministic patch codes: each patch_px patch is k x k cells (k = `cfg.cells_per_patch`) of
  background or one colour.

  Code 0 is an all-background patch; code 1 + m_max * c + (m - 1) is colour c of `COLOURS` on the
  cells of the k*k-bit mask m in 1..m_max = 2**(k*k) - 1 (bit 1 the top-left cell, then row-major).
  With k = 2 (the generator's default) that is 1 + 15 * 8 = 121 codes, 15 cell masks per colour;
  with k = 1 each patch is one cell and the 9 codes are the palette indices (the codes of a moving
  shape are then the shifted codes of the frame before).

  Round trip: decode(encode(v)) == v exactly (zero error) for every `generate` video, and for any
  video whose cells are uniform palette colours with at most one non-background colour per patch.
  Other input is projected (encode(decode(codes)) == codes): each cell takes the palette colour
  nearest its mean RGB, and a patch holding several shape colours keeps its most frequent one
  (ties: the earlier in `COLOURS`), the rest turning background. The closest palette pair (yellow,
  orange) is 83 RGB units apart, so a cell mean within 41 units of its colour (e.g. any
  per-channel noise up to +-23) encodes unchanged.
  """

  def __init__(self, cfg):
    """cfg: a `dataset.SyntheticConfig` (its `cell_px`, `patch_px`, `cells_per_patch` are used)."""
    self.cfg = cfg
    k = cfg.cells_per_patch
    self.masks_per_colour = 2 ** (k * k) - 1  # non-empty cell masks of a patch
    self.n_codes = 1 + self.masks_per_colour * len(COLOURS)
    # [masks_per_colour, k*k] cell bits of masks 1..masks_per_colour
    mask = np.arange(1, self.masks_per_colour + 1)[:, None] >> np.arange(k * k) & 1
    colour = np.arange(1, len(COLOURS) + 1)[:, None, None]
    # [colours * masks_per_colour, k*k] palette index per cell
    cells = (colour * mask[None]).reshape(-1, k * k)
    # [n_codes, k, k] palette index of each cell of each code's patch
    self.cells = np.concatenate([np.zeros((1, k * k), np.int64), cells]).reshape(-1, k, k)

  def encode(self, video: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] frames -> int32 [..., H / patch_px, W / patch_px] codes."""
    video = np.asarray(video)
    *lead, h, w, _ = video.shape
    c, p = self.cfg.cell_px, self.cfg.patch_px
    if h % p or w % p:
      raise ValueError(f"frames {h}x{w} are not a multiple of patch_px={p}")
    cells = cell_colours(video, c)  # [..., h/c, w/c] palette index
    k = self.cfg.cells_per_patch
    cells = cells.reshape(*lead, h // p, k, w // p, k).swapaxes(-3, -2)
    cells = cells.reshape(*lead, h // p, w // p, k * k)  # the k x k cells of each patch, row-major
    counts = (cells[..., None] == np.arange(1, len(PALETTE))).sum(-2)  # [..., h/p, w/p, colours]
    fg = counts.argmax(-1) + 1  # most frequent shape colour (palette index)
    mask = ((cells == fg[..., None]) << np.arange(k * k)).sum(-1)
    return np.where(mask == 0, 0, 1 + self.masks_per_colour * (fg - 1) + mask - 1).astype(np.int32)

  def decode(self, codes: np.ndarray) -> np.ndarray:
    """int [..., h, w] codes -> uint8 [..., h * patch_px, w * patch_px, 3] frames."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= self.n_codes):
      raise ValueError(f"codes must lie in [0, {self.n_codes}), got [{codes.min()}, {codes.max()}]")
    *lead, h, w = codes.shape
    k = self.cfg.cells_per_patch
    cells = self.cells[codes].swapaxes(-3, -2).reshape(*lead, k * h, k * w)
    c = self.cfg.cell_px
    return PALETTE[cells.repeat(c, axis=-2).repeat(c, axis=-1)]
