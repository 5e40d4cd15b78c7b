"""Progress lines with rate and ETA for long host-side jobs (imports, dataset generation)."""
from __future__ import annotations

import time
from typing import TextIO


class Progress:
  """Prints "label: done/total records (k skipped), R/s, ETA" at most every `every` seconds."""

  def __init__(self, total: int, label: str, stream: TextIO, every: float = 2.0):
    self.total, self.label, self.stream, self.every = total, label, stream, every
    self._start = self._last = time.monotonic()

  def __call__(self, done: int, skipped: int):
    now = time.monotonic()
    if done == self.total or now - self._last >= self.every:
      self._last = now
      rate = done / max(now - self._start, 1e-9)
      eta = (self.total - done) / rate if rate else float("inf")
      print(f"{self.label}: {done}/{self.total} records ({skipped} skipped), {rate:.1f}/s, "
            f"ETA {eta:.0f} s", file=self.stream, flush=True)
