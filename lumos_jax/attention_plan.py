"""The attention plan: a batch's key ranges as a static, hashable grid of bands.

Fused kernels need the shape of the mask at trace time, while `k_start` / `k_end` are traced
arrays. The plan is derived once on the host from a concrete batch's key ranges and passed to
`attention.attend(..., plan=)` as a static argument:

  band  queries [lo, hi) that all attend a prefix of the keys, [0, key_hi) at most:
        causal  query q sees keys up to itself (k_end[q] = q + 1; key_hi = hi): the text, the
                header, the video trailer, padding rows;
        full    every query sees keys up to key_hi (k_end[q] = key_hi): one frame block, which
                attends all earlier tokens and its own block.

`k_end` fixes the grid and must be the same in every row of the batch: that is what a fixed text
budget (text left-padded to one length, as the sampler's unconditional row is) and equal frame
counts give. `k_start` stays a traced array; the plan only records, per band, whether it is 0 in
every row (`from_zero`): where it is, a kernel needs no lower bound (cuDNN's causal and unmasked
modes); where it is not (left pads, packed rows, padding rows), the kernels use `k_start` itself.

Executed (q, k) pairs of a band-by-band call: sum over bands of (hi - lo) x key_hi (`pairs`);
allowed pairs: sum of k_end - k_start (`allowed_pairs`).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Band:
  """Queries [lo, hi) against keys [0, key_hi); see the module docstring for `causal`."""
  lo: int
  hi: int
  key_hi: int
  causal: bool
  from_zero: bool  # k_start == 0 for every query of the band in every row


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
  """The bands of a [B, L] batch, in query order, covering [0, length) exactly once."""
  bands: tuple[Band, ...]
  length: int

  @property
  def pairs(self) -> int:
    """(q, k) pairs per row that a band-by-band computation executes."""
    return sum((b.hi - b.lo) * b.key_hi for b in self.bands)


def _as_batch(x) -> np.ndarray:
  x = np.asarray(x)
  return x[None] if x.ndim == 1 else x


def plan_of(k_start, k_end) -> AttentionPlan:
  """The plan of concrete key ranges int [B, L] (or [L]); raises ValueError naming the first
  query whose k_end differs between rows, or that attends a key after its band."""
  k_start, k_end = _as_batch(k_start), _as_batch(k_end)
  length = k_end.shape[1]
  differs = np.flatnonzero((k_end != k_end[:1]).any(axis=0))
  if differs.size:
    q = int(differs[0])
    raise ValueError(f"query {q}: k_end differs between rows ({sorted(set(k_end[:, q]))}); a "
                     "static attention plan needs one band grid per batch (left-pad text to a "
                     "fixed budget and give every row the same frames)")
  end = k_end[0]
  query = np.arange(length)
  if (end <= query).any() or (k_start > query).any():
    q = int(np.flatnonzero((end <= query) | (k_start > query).any(axis=0))[0])
    raise ValueError(f"query {q} does not attend itself (k_start={k_start[:, q]}, "
                     f"k_end={end[q]}): not a causal layout")
  bands, lo = [], 0
  while lo < length:
    causal = end[lo] == lo + 1
    hi = lo + 1
    if causal:
      while hi < length and end[hi] == hi + 1:
        hi += 1
    else:
      while hi < length and end[hi] == end[lo]:
        hi += 1
    key_hi = hi if causal else int(end[lo])
    bands.append(Band(lo=lo, hi=hi, key_hi=key_hi, causal=bool(causal),
                      from_zero=bool((k_start[:, lo:hi] == 0).all())))
    lo = hi
  return AttentionPlan(bands=tuple(bands), length=length)


def check(plan: AttentionPlan, k_start, k_end) -> None:
  """Raises ValueError if concrete key ranges do not follow `plan` (a batch from another grid)."""
  actual = plan_of(k_start, k_end)
  if actual != plan:
    first = next((a, b) for a, b in zip(actual.bands + (None,), plan.bands + (None,)) if a != b)
    raise ValueError(f"the batch's attention bands differ from the plan: batch has {first[0]}, "
                     f"plan has {first[1]}")


def allowed_pairs(k_start, k_end) -> int:
  """(q, k) pairs the key ranges allow, summed over the batch rows and divided by their number."""
  k_start, k_end = _as_batch(k_start), _as_batch(k_end)
  return int(np.sum(k_end - k_start)) // k_end.shape[0]
