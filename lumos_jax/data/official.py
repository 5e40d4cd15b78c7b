"""Import of the official Lumos-1 pre-tokenized samples (`.pkl` files listed by an index).

Input (LUMOS_REFERENCE.md section 8):
  INDEX  a `merge-record.json` (JSON list of {file, len, id}), a `*-record.jsonl` (one such object
         per line), or a data `.yaml` (`META: [{path: <one of those>, ratio: ...}]`).
  ROOT   the official code root: the index's `file` paths and a yaml's `path` entries are
         relative to it, and it holds `data/num2tokens.json`. Default: the nearest ancestor of
         INDEX holding `data/num2tokens.json` (the official trainer runs from that directory).
  Every `file` is a pickled dict {"token": [int], "label": [int], "id": int}, read only with
  `safe_pickle.load` (no class or function in a pickle is ever resolved).

Per sample, what the official trainer does at train time (finetune_solver_vid.py; reference 2.2):
  * the frame-count and fps placeholders of the prompt (65539, 65540) become the digit tokens
    (`data/num2tokens.json`) of fps * duration (RGB frames) and of fps;
  * with `frames=N`, a video keeps its first N latent frame blocks and is closed with
    [VIDEO_END, SEP]; the header [VIDEO_START, NUM+duration, NUM+fps] gets the RGB duration;
  * one-frame samples are images: header [9004, 8805, 8805] and prompt digits "1" / "1"; they are
    never cut.

The N -> (duration, RGB frames) rule. The official trainer goes the other way: it is given an RGB
duration d (integer seconds) and the stored fps f, and keeps 1 + ceil((f*d - 1) / 4) latent
frames (the causal Cosmos-DV4x8x8 count for f*d RGB frames). Its inverse that we use: N latent
frames stand for R = 4 * (N - 1) RGB frames and d = R / f seconds, which must be a whole number
(the header token holds integer seconds); otherwise the cut is rejected. Since
1 + ceil((4(N-1) - 1) / 4) = N, the official forward rule maps d back to the same N. At 12 fps:
N = 7 -> 24 frames, 2 s (the official stage-2 setting); N = 22 -> 84 frames, 7 s (the stored
videos); valid N are 1 + multiples of 3. Uncut videos keep the stored (duration, fps) and must
satisfy the forward rule (stored latent frames = 1 + ceil((f*d - 1) / 4)).

Captions: the prompt is Chameleon BPE ids and this project has no BPE tokenizer, so records get
caption "" (the ids themselves stay in `tokens`). Labels are not stored: they must have the
official text-to-video form (-100 up to and including the first SEP, equal to the tokens after
it), which the trainer can rebuild from the tokens; a record whose labels differ is rejected
rather than silently losing them.

A sample that fails any check (the converted sequence must pass `layout_check.validate`, the
strict official layout) is reported with its file and the reason and skipped, or raises
`BadRecord` with `strict=True`; so is a bad index line (reported as INDEX:LINE). The import counts
the skipped ones per kind (`SampleError.kind`, or "bad index line").
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
from typing import Any, TextIO
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from lumos_jax import layout_check
from lumos_jax import tokens as tokens_lib
from lumos_jax.data import records, safe_pickle
from lumos_jax.data.official_index import Entry, digits, find_root, load_num2tokens, read_index
from lumos_jax.progress import Progress

VOCAB = tokens_lib.LUMOS
FRAMES_PLACEHOLDER = 65539  # <video_frames_placeholder>
FPS_PLACEHOLDER = 65540  # <video_fps_placeholder>
RESOLUTION_PLACEHOLDER = 65538  # already substituted in the stored data; must not remain
TEMPORAL_COMPRESSION = 4  # Cosmos-DV4x8x8: 4 RGB frames per latent frame after the first
IGNORE = -100  # label of tokens without loss


class BadRecord(ValueError):
  """A sample (or index line) that cannot be imported: `file` (as listed in the index, or
  "INDEX:LINE"), `reason` and its `kind` (see `SampleError`)."""

  def __init__(self, file: str, reason: str, kind: str = "bad sample"):
    super().__init__(f"{file}: {reason}")
    self.file, self.reason, self.kind = file, reason, kind


class SampleError(ValueError):
  """Why a sample is refused: `kind`, the short category the import summary counts ("missing
  file", "unreadable pickle", "bad fields", "malformed sequence", "bad timing", "bad prompt"),
  and the reason as the message."""

  def __init__(self, kind: str, reason: str):
    super().__init__(reason)
    self.kind = kind


def _stage(kind: str, fn: Callable, *args):
  """fn(*args), its ValueError re-raised as SampleError(kind, reason)."""
  try:
    return fn(*args)
  except SampleError:
    raise
  except ValueError as e:
    raise SampleError(kind, str(e)) from None


# ------------------------------------------------------------------------------------------------
# Frames <-> duration
# ------------------------------------------------------------------------------------------------

def latent_frames(rgb_frames: int) -> int:
  """Latent frames the official trainer keeps for `rgb_frames` RGB frames: 1 + ceil((R-1)/4)."""
  return 1 + math.ceil((rgb_frames - 1) / TEMPORAL_COMPRESSION)


def cut_timing(n_frames: int, fps: int) -> tuple[int, int]:
  """(duration in s, RGB frames) for a video cut to `n_frames` latent frames at `fps`.

  RGB frames = 4 * (N - 1); duration = RGB frames / fps must be a whole number of seconds.
  E.g. cut_timing(7, 12) == (2, 24), cut_timing(22, 12) == (7, 84).
  """
  if n_frames < 2:
    raise ValueError(f"cannot cut a video to {n_frames} latent frame(s): that is 0 RGB frames "
                     "of video (one-frame samples are images); keep at least 2")
  if fps < 1:
    raise ValueError(f"fps {fps} in the video header: cannot compute a duration")
  rgb = TEMPORAL_COMPRESSION * (n_frames - 1)
  if rgb % fps:
    step = fps // math.gcd(fps, TEMPORAL_COMPRESSION)
    raise ValueError(
        f"{n_frames} latent frames at {fps} fps are {rgb} RGB frames = {rgb / fps:.4g} s, not a "
        f"whole number of seconds (the header token holds integer seconds); at {fps} fps use "
        f"1 + a multiple of {step} latent frames (e.g. {1 + step}, {1 + 2 * step})")
  return rgb // fps, rgb


# ------------------------------------------------------------------------------------------------
# One sample
# ------------------------------------------------------------------------------------------------

def _int_array(obj: dict, key: str) -> np.ndarray:
  """obj[key] as int64 [L], if it is a non-empty list of Python ints."""
  values = obj.get(key)
  if not isinstance(values, list):
    raise ValueError(f"'{key}' must be a list of ints, got {type(values).__name__}")
  # bool is an int subclass and numpy would silently take floats: check each element's type.
  bad = next((v for v in values if type(v) is not int), None)
  if bad is not None or not values:
    raise ValueError(f"'{key}' must be a non-empty list of ints"
                     + (f", found {type(bad).__name__} {bad!r:.50}" if bad is not None else ""))
  try:
    return np.asarray(values, np.int64)
  except OverflowError:
    raise ValueError(f"'{key}' holds ints beyond int64") from None


def _validated(obj: Any, entry: Entry | None) -> tuple[np.ndarray, int | str | None]:
  """Token ids int64 [L] and the id of an official sample dict, after the format checks."""
  if not isinstance(obj, dict):
    raise ValueError(f"expected a dict {{token, label, id}}, got {type(obj).__name__}")
  ids, labels = _int_array(obj, "token"), _int_array(obj, "label")
  if len(labels) != len(ids):
    raise ValueError(f"'token' has {len(ids)} ids but 'label' has {len(labels)}")
  if entry is not None and entry.len is not None and entry.len != len(ids):
    raise ValueError(f"the index says len {entry.len}, the file holds {len(ids)} tokens "
                     "(stale index?)")
  ident = obj.get("id", entry.id if entry else None)
  if isinstance(ident, bool) or not isinstance(ident, (int, str, type(None))):
    raise ValueError(f"'id' must be an int or str, got {type(ident).__name__}")
  if entry is not None and entry.id is not None and "id" in obj and obj["id"] != entry.id:
    raise ValueError(f"id {obj['id']!r} in the file differs from id {entry.id!r} in the index")
  seps = np.flatnonzero(ids == VOCAB.sep)
  if not seps.size:
    raise ValueError(f"no SEP ({VOCAB.sep}) ending the prompt")
  prompt_end = int(seps[0]) + 1
  if (labels[:prompt_end] != IGNORE).any() or (labels[prompt_end:] != ids[prompt_end:]).any():
    raise ValueError("labels are not the official text-to-video form (-100 up to and including "
                     "the first SEP, equal to the tokens after it); importing would lose them")
  return ids, ident


@dataclasses.dataclass
class _Sample:
  """Where things are in one validated official sample."""
  prefix: np.ndarray  # BOS .. SEP (prompt), int64
  blocks: list[tuple[int, int]]  # [start, end) of each frame block IMAGE_START..IMAGE_END
  duration: int  # stored header values
  fps: int
  latent_h: int
  latent_w: int


def _structure(ids: np.ndarray) -> _Sample:
  """Checks the official layout [BOS] prompt [SEP] header frames [VIDEO_END, SEP] exactly."""
  tokens_lib.parse(ids, VOCAB)  # ids in range, complete frames, rows match size tokens
  v = np.flatnonzero(ids == VOCAB.video_start)
  if len(v) != 1 or np.count_nonzero(ids == VOCAB.video_end) != 1:
    raise ValueError(f"expected exactly one VIDEO_START and one VIDEO_END, found {len(v)} and "
                     f"{np.count_nonzero(ids == VOCAB.video_end)}")
  v = int(v[0])
  if ids[0] != VOCAB.bos or ids[v - 1] != VOCAB.sep:
    raise ValueError(f"the prompt must be [BOS {VOCAB.bos}] ... [SEP {VOCAB.sep}] before "
                     f"VIDEO_START, got {ids[0]} ... {ids[v - 1]}")
  trailer = tokens_lib.video_trailer(VOCAB)
  if list(ids[-len(trailer):]) != trailer:
    raise ValueError(f"the sample must end with [VIDEO_END, SEP] = {trailer}, got "
                     f"{ids[-len(trailer):].tolist()}")
  starts = np.flatnonzero(ids == VOCAB.image_start)
  ends = np.flatnonzero(ids == VOCAB.image_end)
  if not len(starts):
    raise ValueError("the video has no frames")
  # parse() guarantees matched blocks; here they must also be back to back after the header.
  expected_starts = np.concatenate([[v + tokens_lib.VIDEO_HEADER], ends[:-1] + 1])
  last_end = len(ids) - len(trailer) - 1
  if len(starts) != len(ends) or (starts != expected_starts).any() or ends[-1] != last_end:
    raise ValueError("frames must follow the video header and each other directly, up to "
                     "VIDEO_END")
  size = ids[np.stack([starts + 1, starts + 2], axis=1)]
  if (size != size[0]).any():
    k = int(np.flatnonzero((size != size[0]).any(axis=1))[0])
    raise ValueError(f"frame {k} has size tokens {size[k].tolist()}, frame 0 {size[0].tolist()}")
  header_end = v + tokens_lib.VIDEO_HEADER
  header = ids[v + 1:header_end] - VOCAB.number_zero
  if ((header < 0) | (header >= VOCAB.number_count)).any():
    raise ValueError(f"video header {ids[v:header_end].tolist()}: duration/fps are not integer "
                     "tokens")
  unit = VOCAB.size_unit
  return _Sample(prefix=ids[:v], blocks=list(zip(starts.tolist(), (ends + 1).tolist())),
                duration=int(header[0]), fps=int(header[1]),
                latent_h=int(size[0, 0] - VOCAB.number_zero) * unit,
                latent_w=int(size[0, 1] - VOCAB.number_zero) * unit)


def _timing(parsed: _Sample, frames: int | None) -> tuple[int, int, int]:
  """(latent frames kept, duration, fps) for the output header and prompt."""
  stored = len(parsed.blocks)
  if stored == 1:
    return 1, 1, 1  # an image: the official image setting (fps, duration) = (1, 1)
  d, f = parsed.duration, parsed.fps
  if f < 1 or latent_frames(f * d) != stored:
    raise ValueError(f"the header says {d} s at {f} fps ({f * d} RGB frames -> "
                     f"{latent_frames(f * d) if f >= 1 else '?'} latent frames), but the sample "
                     f"has {stored} latent frames")
  if frames is None or frames == stored:
    return stored, d, f
  if frames > stored:
    raise ValueError(f"the video has {stored} latent frames, fewer than the {frames} requested")
  duration, _ = cut_timing(frames, f)
  return frames, duration, f


def _fill_prompt(prefix: np.ndarray, rgb_frames: int, fps: int,
                 num2tokens: dict[int, list[int]]) -> np.ndarray:
  """The prompt with the frame-count / fps placeholders replaced by digit tokens."""
  for placeholder, name in ((FRAMES_PLACEHOLDER, "frame-count"), (FPS_PLACEHOLDER, "fps")):
    if np.count_nonzero(prefix == placeholder) != 1:
      raise ValueError(f"the prompt must hold the {name} placeholder {placeholder} exactly once, "
                       f"found {np.count_nonzero(prefix == placeholder)}")
  out = []
  for t in prefix.tolist():
    if t == FRAMES_PLACEHOLDER:
      out += digits(rgb_frames, num2tokens)
    elif t == FPS_PLACEHOLDER:
      out += digits(fps, num2tokens)
    else:
      out.append(t)
  out = np.asarray(out, np.int64)
  # Ids from 65536 on are visual codes to the model: no placeholder (e.g. 65538) may remain.
  if (out >= VOCAB.visual_offset).any():
    raise ValueError(f"the prompt holds id {out[out >= VOCAB.visual_offset][0]} (a placeholder or "
                     "visual id) after filling the frame-count and fps placeholders")
  return out


def convert(sample: Any, *, num2tokens: dict[int, list[int]], frames: int | None = None,
            source: str = "", entry: Entry | None = None) -> records.Record:
  """One official sample dict -> a `Record` in the trained form (see the module docstring).

  Args:
    sample: the unpickled {"token", "label", "id"} dict.
    num2tokens: `load_num2tokens(root)`.
    frames: cut videos to this many latent frames (None keeps them whole; images are never cut).
    source: stored as the record's `source` (the index's `file`).
    entry: the index line, checked against the sample (len, id) when given.
  The record id is the sample's "id" (else the index's, else `source`).
  Raises:
    SampleError (a ValueError) saying what is wrong with the sample, and its kind.
  """
  ids, ident = _stage("bad fields", _validated, sample, entry)
  parsed = _stage("malformed sequence", _structure, ids)
  n, duration, fps = _stage("bad timing", _timing, parsed, frames)
  prompt = _stage("bad prompt", _fill_prompt, parsed.prefix, fps * duration, fps, num2tokens)
  header = tokens_lib.video_header(VOCAB, duration, fps)
  kept = ids[parsed.blocks[0][0]:parsed.blocks[n - 1][1]]
  out = np.concatenate([prompt, header, kept, tokens_lib.video_trailer(VOCAB)]).astype(np.int32)
  # The output must be a training sample in exactly the official layout.
  layout = _stage("malformed sequence", layout_check.validate, out, VOCAB)
  if int(layout.frame.max()) + 1 != n:
    raise ValueError(f"internal: the output parses to {int(layout.frame.max()) + 1} frames, "
                     f"not {n}")
  return records.Record(tokens=out, id=ident if ident is not None else source, caption="",
                        fps=fps, duration=duration, frames=n, latent_h=parsed.latent_h,
                        latent_w=parsed.latent_w, source=source)


def load_sample(root: pathlib.Path, entry: Entry, *, num2tokens: dict[int, list[int]],
                frames: int | None = None) -> records.Record:
  """Reads and converts the file of one index entry; ValueError with the reason if it is bad."""
  path = root / entry.file
  if not path.is_file():
    raise SampleError("missing file", f"missing file ({path} does not exist)")
  try:
    sample = safe_pickle.load(path)
  except Exception as e:  # refused globals, truncated or foreign files: all just "bad"
    raise SampleError("unreadable pickle",
                      f"refused/unreadable pickle: {type(e).__name__}: {e}") from None
  return convert(sample, num2tokens=num2tokens, frames=frames, source=entry.file, entry=entry)


# ------------------------------------------------------------------------------------------------
# Whole imports
# ------------------------------------------------------------------------------------------------

def iter_records(entries: Sequence[Entry], root: pathlib.Path, *,
                 num2tokens: dict[int, list[int]], frames: int | None = None, strict: bool = False,
                 on_bad: Callable[[BadRecord], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[records.Record]:
  """Converted records of `entries`, in order; bad ones go to `on_bad(BadRecord)` and are
  skipped, or raise `BadRecord` when `strict`."""
  skipped = 0
  for done, entry in enumerate(entries, 1):
    try:
      record = load_sample(root, entry, num2tokens=num2tokens, frames=frames)
    except ValueError as e:
      bad = BadRecord(entry.file, str(e), getattr(e, "kind", "bad sample"))
      if strict:
        raise bad from None
      skipped += 1
      if on_bad is not None:
        on_bad(bad)
    else:
      yield record
    if progress is not None:
      progress(done, skipped)


@dataclasses.dataclass
class ImportResult:
  out: pathlib.Path
  written: int
  skipped: list[tuple[str, str]]  # (file or "INDEX:LINE", reason) of each bad sample/index line
  reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # skipped per kind


def import_lumos(index: str | os.PathLike | Iterable[str | os.PathLike], out: str | os.PathLike, *,
                 root: str | os.PathLike | None = None, frames: int | None = None,
                 strict: bool = False, shard_size: int = records.DEFAULT_SHARD_SIZE,
                 log: TextIO | None = None) -> ImportResult:
  """Imports the samples one or more indexes list into a record directory `out`.

  Bad samples and bad index lines (a .jsonl line that is not JSON or lacks a string `file`)
  are reported on `log` as "skipped FILE: REASON" (FILE is "INDEX:LINE" for an index line) and
  counted per kind in `reasons` (or raise `BadRecord` when `strict`, leaving no shard behind);
  progress lines go to `log` too (default: sys.stderr, looked up at call time so redirections
  apply).
  """
  log = log or sys.stderr
  indexes = [index] if isinstance(index, (str, os.PathLike)) else list(index)
  if not indexes:
    raise ValueError("no index given")
  if frames is not None and frames < 1:
    raise ValueError(f"frames must be at least 1, got {frames}")
  root = pathlib.Path(root) if root is not None else find_root(indexes[0])
  num2tokens = load_num2tokens(root)
  result = ImportResult(out=pathlib.Path(out), written=0, skipped=[])

  def on_bad(bad: BadRecord):
    if strict:
      raise bad
    result.skipped.append((bad.file, bad.reason))
    result.reasons[bad.kind] = result.reasons.get(bad.kind, 0) + 1
    print(f"skipped {bad.file}: {bad.reason}", file=log, flush=True)

  on_bad_line = lambda where, reason: on_bad(BadRecord(where, reason, "bad index line"))
  entries = [e for i in indexes for e in read_index(i, root, log=log, on_bad=on_bad_line)]

  args = {"command": "import-lumos", "index": [str(i) for i in indexes], "root": str(root),
          "frames": frames, "strict": strict}
  stream = iter_records(entries, root, num2tokens=num2tokens, frames=frames, strict=strict,
                        on_bad=on_bad, progress=Progress(len(entries), "import-lumos", log))
  result.written = records.write_records(out, stream, shard_size=shard_size, vocab=VOCAB,
                                         args=args)
  return result
