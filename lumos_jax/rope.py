"""Rotary position embeddings: 1-D, contiguous 3-D and Lumos MM-RoPE (LUMOS_REFERENCE.md section 1).

All variants rotate channel pair (i, i + head_dim/2) ("rotate half") by `position[axis(i)] *
inv_freq[i]`; they differ only in which position axis (t, h, w) drives each frequency:
  1d: every frequency uses the token's 1-D index (positions are (p, p, p)).
  3d: contiguous split of the frequencies, t:h:w = 2:3:3 (the naive 3-D RoPE the paper compares
      with).
  mm: frequency f goes to axis by f mod 16 (t: 0-3, h: 4,5,8,9,12,13, w: 6,7,10,11,14,15), so every
      axis gets frequencies across the whole spectrum.
Text tokens carry positions (p, p, p), so they get plain 1-D RoPE under every variant.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

VARIANTS = ("1d", "3d", "mm")
_MM_AXIS_OF_OFFSET = np.array([0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2])  # t=0, h=1, w=2


def check_head_dim(head_dim: int, variant: str) -> None:
  """Raises ValueError when `variant` cannot rotate heads of `head_dim` channels."""
  if variant not in VARIANTS:
    raise ValueError(f"rope variant must be one of {VARIANTS}, got {variant!r}")
  if head_dim % 2:
    raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
  if variant == "mm" and head_dim % 32:
    raise ValueError(f"MM-RoPE needs head_dim to be a multiple of 32 (meta-groups of 16 "
                     f"frequencies), got head_dim={head_dim}")
  if variant == "3d" and head_dim % 16:
    raise ValueError(f"3-D RoPE splits frequencies 2:3:3 and needs head_dim % 16 == 0, "
                     f"got {head_dim}")


def frequency_axes(head_dim: int, variant: str = "mm") -> np.ndarray:
  """int [head_dim // 2]: the position axis (0 t, 1 h, 2 w) that drives each frequency."""
  check_head_dim(head_dim, variant)
  n = head_dim // 2
  if variant == "mm":
    return _MM_AXIS_OF_OFFSET[np.arange(n) % 16]
  if variant == "3d":
    n_t = n // 4
    n_h = (n - n_t) // 2
    return np.repeat([0, 1, 2], [n_t, n_h, n - n_t - n_h])
  return np.zeros(n, np.int64)


def inv_frequencies(head_dim: int, theta: float = 10000.0) -> np.ndarray:
  """float32 [head_dim // 2]: theta^(-2f/head_dim), in float32 as the official code computes it."""
  exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  return np.float32(1.0) / (np.float32(theta) ** exponent)


def angles(positions, head_dim: int, theta: float = 10000.0, variant: str = "mm"):
  """Rotation angles in radians, float32 [..., L, head_dim // 2], from positions int [..., L, 3]."""
  axes = frequency_axes(head_dim, variant)
  pos = jnp.asarray(positions).astype(jnp.float32)
  return pos[..., axes] * jnp.asarray(inv_frequencies(head_dim, theta))


def apply(x, angles_ld):
  """Rotates x [..., L, heads, head_dim] by angles [..., L, head_dim // 2] (rotate-half pairing).

  cos/sin are computed in float32 and cast to x's dtype, as in the official model.
  """
  cos = jnp.cos(angles_ld)[..., None, :].astype(x.dtype)
  sin = jnp.sin(angles_ld)[..., None, :].astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def rope_positions(layout_positions, layout_index, variant: str):
  """Positions [..., L, 3] a variant uses: (p, p, p) for `1d`, the layout's 3-D ones otherwise."""
  if variant == "1d":
    idx = jnp.asarray(layout_index)
    return jnp.stack([idx, idx, idx], axis=-1)
  return jnp.asarray(layout_positions)
