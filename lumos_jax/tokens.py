"""Vocabularies, the official Lumos sequence layout, and parsing a sequence into a `Layout`.

A sequence (LUMOS_REFERENCE.md section 2.2) is

  [BOS] text [SEP] [VIDEO_START, NUM+duration, NUM+fps]
  T x ( [IMAGE_START, NUM+H/u, NUM+W/u] + H x (W codes + [NEWLINE]) + [IMAGE_END] )
  [VIDEO_END, SEP]

with codes at `visual_offset + c` and u = `size_unit` latent rows per size-token step (4 for
Cosmos-DV4x8x8 at 32-pixel size tokens). Everything downstream consumes the `Layout` that `parse`
computes once on the host: rotary positions, the key range each query may attend, and the per-token
frame/row/column bookkeeping the loss, the masking and the sampler need.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token ids of one vocabulary. `LUMOS` is the official one; `compact` builds small ones."""
  size: int
  bos: int
  sep: int
  image_start: int
  image_end: int
  newline: int
  mask: int
  video_start: int
  video_end: int
  number_zero: int   # id of the integer token for 0; integer n is number_zero + n
  number_count: int  # how many integer tokens exist
  visual_offset: int  # id of visual code 0
  visual_size: int   # number of visual codes
  size_unit: int = 4  # latent rows/cols per size-token step (32 px / 8 px stride)
  byte_text_offset: int | None = None  # compact vocabularies: text is UTF-8 bytes at this offset

  def __post_init__(self):
    if self.visual_offset + self.visual_size > self.size:
      raise ValueError(f"visual ids [{self.visual_offset}, "
                       f"{self.visual_offset + self.visual_size}) exceed the vocabulary size "
                       f"{self.size}")

  def number(self, n: int) -> int:
    """Id of the integer token for n (size tokens, duration, fps)."""
    if not 0 <= n < self.number_count:
      raise ValueError(f"integer {n} has no token: integer tokens cover 0..{self.number_count - 1}")
    return self.number_zero + n

  def is_visual(self, ids: np.ndarray) -> np.ndarray:
    return (ids >= self.visual_offset) & (ids < self.visual_offset + self.visual_size)

  def encode_text(self, text: str) -> list[int]:
    """Byte-level text ids (compact vocabularies only; the official one uses Chameleon's BPE)."""
    if self.byte_text_offset is None:
      raise ValueError("this vocabulary has no built-in text tokenizer (the official Lumos "
                       "vocabulary needs the Chameleon BPE tokenizer)")
    return [self.byte_text_offset + b for b in text.encode("utf-8")]

  def decode_text(self, ids: Sequence[int]) -> str:
    """Inverse of `encode_text`; ids outside the byte range are dropped."""
    lo = self.byte_text_offset
    return bytes(i - lo for i in ids if lo <= i < lo + 256).decode("utf-8", errors="replace")

  @classmethod
  def compact(cls, text_size: int = 256, visual_size: int = 512, number_count: int = 64,
              size_unit: int = 1) -> Vocab:
    """A small vocabulary with the official structure, for demo-sized models.

    Ids: 0 BOS, 1 SEP, 2 IMAGE_START, 3 IMAGE_END, 4 NEWLINE, 5 MASK, 6 VIDEO_START, 7 VIDEO_END,
    then `number_count` integer tokens, then `text_size` text ids (the first 256 are UTF-8
    bytes, see `encode_text`), then `visual_size` codes.
    """
    if text_size < 256:
      raise ValueError(f"text_size={text_size}: byte-level text needs at least 256 ids")
    number_zero = 8
    text_zero = number_zero + number_count
    visual_offset = text_zero + text_size
    return cls(size=visual_offset + visual_size, bos=0, sep=1, image_start=2, image_end=3,
               newline=4, mask=5, video_start=6, video_end=7, number_zero=number_zero,
               number_count=number_count, visual_offset=visual_offset, visual_size=visual_size,
               size_unit=size_unit, byte_text_offset=text_zero)


# Official ids (LUMOS_REFERENCE.md section 2.1). Integer tokens 8804.. stop below MASK (9003).
LUMOS = Vocab(size=129_536, bos=0, sep=8710, image_start=8197, image_end=8196, newline=8803,
              mask=9003, video_start=9004, video_end=9005, number_zero=8804, number_count=199,
              visual_offset=65_536, visual_size=64_000, size_unit=4)

LUMOS_STRIDES = (4, 8, 8)  # Cosmos-DV4x8x8 compression (t, h, w): MM-RoPE position scale

# The fixed-size pieces of the layout, stated once: every block length, slot offset and code grid
# elsewhere is derived from these and the helpers below (`build` and `parse` define the format).
VIDEO_HEADER = 3  # VIDEO_START, NUM+duration, NUM+fps
VIDEO_TRAILER = 2  # VIDEO_END, SEP
FRAME_HEADER = 3  # IMAGE_START, NUM+H/u, NUM+W/u
FRAME_TRAILER = 1  # IMAGE_END


def video_header(vocab: Vocab, duration: int, fps: int) -> list[int]:
  """The VIDEO_HEADER tokens opening a video span."""
  return [vocab.video_start, vocab.number(duration), vocab.number(fps)]


def video_trailer(vocab: Vocab) -> list[int]:
  """The VIDEO_TRAILER tokens closing a video span (and the sample)."""
  return [vocab.video_end, vocab.sep]


def row_length(w: int) -> int:
  """Slots per latent row: its W codes, then a NEWLINE (the newline column is col = W)."""
  return w + 1


def content_length(h: int, w: int) -> int:
  """Content slots of an H x W frame: H rows of `row_length(W)` (codes and newlines)."""
  return h * row_length(w)


def frame_block_length(h: int, w: int) -> int:
  """Tokens of an H x W frame block IMAGE_START .. IMAGE_END: header, content, trailer."""
  return FRAME_HEADER + content_length(h, w) + FRAME_TRAILER


def block_slots(content_mask: np.ndarray) -> np.ndarray:
  """bool [content_length] over a frame's content slots -> bool [frame_block_length] over its
  whole block, False on the header and trailer tokens."""
  content_mask = np.asarray(content_mask, bool)
  return np.concatenate([np.zeros(FRAME_HEADER, bool), content_mask,
                         np.zeros(FRAME_TRAILER, bool)])


def code_slots(h: int, w: int) -> np.ndarray:
  """bool [frame_block_length(h, w)]: the slots of an H x W frame block that hold codes."""
  col = np.arange(content_length(h, w)) % row_length(w)
  return block_slots(col < w)


def content_grid(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
  """[..., frame_block_length(h, w)] frame blocks -> [..., H, W + 1] content slots per row
  (the W codes, then the NEWLINE column)."""
  blocks = np.asarray(blocks)
  if blocks.shape[-1] != frame_block_length(h, w):
    raise ValueError(f"a {h}x{w} frame block has {frame_block_length(h, w)} tokens, got "
                     f"blocks of shape {blocks.shape}")
  content = blocks[..., FRAME_HEADER:blocks.shape[-1] - FRAME_TRAILER]
  return content.reshape(*blocks.shape[:-1], h, row_length(w))


def frame_codes(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
  """[..., frame_block_length(h, w)] frame blocks -> [..., H, W] ids in their code slots."""
  return content_grid(blocks, h, w)[..., :w]


def build(text_ids: Sequence[int] | None, frames: np.ndarray, fps: int, duration: int, *,
          vocab: Vocab = LUMOS, close: bool = True) -> np.ndarray:
  """Lays out one sample exactly as the official pre-tokenizer does.

  Args:
    text_ids: tokenized prompt without BOS/SEP, or None for the text-dropped (unconditional) form,
      which starts at VIDEO_START.
    frames: [T, H, W] visual codes in [0, vocab.visual_size). H and W must be multiples of
      `vocab.size_unit`.
    fps, duration: values written into the video header tokens.
    close: append VIDEO_END and SEP (False leaves the video open, as a generation prefix).
  Returns:
    int32 [L] token ids.
  """
  frames = np.asarray(frames)
  if frames.ndim != 3:
    raise ValueError(f"frames must be [T, H, W] codes, got shape {frames.shape}")
  t, h, w = frames.shape
  if h % vocab.size_unit or w % vocab.size_unit:
    raise ValueError(f"latent frame {h}x{w} is not a multiple of the size unit {vocab.size_unit}")
  if frames.size and (frames.min() < 0 or frames.max() >= vocab.visual_size):
    raise ValueError(f"visual codes must lie in [0, {vocab.visual_size}), got "
                     f"[{frames.min()}, {frames.max()}]")
  out = []
  if text_ids is not None:
    out += [vocab.bos, *map(int, text_ids), vocab.sep]
  out += video_header(vocab, duration, fps)
  size_tokens = [vocab.number(h // vocab.size_unit), vocab.number(w // vocab.size_unit)]
  newline_col = np.full((h, 1), vocab.newline, np.int64)
  for frame in frames:
    rows = np.concatenate([frame.astype(np.int64) + vocab.visual_offset, newline_col], axis=1)
    out += [vocab.image_start, *size_tokens, *rows.reshape(-1).tolist(), vocab.image_end]
  if close:
    out += video_trailer(vocab)
  return np.asarray(out, np.int32)


@dataclasses.dataclass
class Layout:
  """Per-token facts of a (possibly padded or packed) sequence. All fields are numpy [L] / [L, 3].

  positions: int32 [L, 3] MM-RoPE positions (t, h, w); non-content tokens use (p, p, p), p = index.
  index:     int32 1-D rotary position (index within its sample; the `1d` variant uses it).
  k_start, k_end: int32, query q attends keys k_start[q] <= k < k_end[q].
  frame:     int32 frame index within the sample for tokens IMAGE_START..IMAGE_END, else -1.
  content:   bool, a content slot of a frame (codes and newlines: `content_length` per frame).
  code:      bool, a content slot holding a code (not the newline column): what the loss may use.
  row, col:  int32 latent row/column of content slots (newline col = W), else -1.
  valid:     bool, False on padding.
  """
  positions: np.ndarray
  index: np.ndarray
  k_start: np.ndarray
  k_end: np.ndarray
  frame: np.ndarray
  content: np.ndarray
  code: np.ndarray
  row: np.ndarray
  col: np.ndarray
  valid: np.ndarray

  def __len__(self) -> int:
    return len(self.k_end)

  @property
  def max_lookahead(self) -> int:
    """Largest number of keys after a query that it attends (frame block length - 1)."""
    return int(np.max(self.k_end - 1 - np.arange(len(self)), initial=0))


def _fail(i: int, what: str):
  raise ValueError(f"malformed sequence at token {i}: {what}")


def _parse_frame(ids: np.ndarray, i: int, vocab: Vocab) -> tuple[int, int, int]:
  """Checks the frame block whose IMAGE_START is at i; returns (H, W, index of its IMAGE_END)."""
  n = len(ids)
  first = i + FRAME_HEADER  # first content slot; the size tokens sit between IMAGE_START and it
  if first > n:
    _fail(n, f"unterminated frame started at {i}: sequence ends before its two size tokens")
  sizes = []
  for j in range(i + 1, first):
    s = int(ids[j]) - vocab.number_zero
    if not 0 < s < vocab.number_count:
      _fail(j, f"expected a size token in [{vocab.number_zero + 1}, "
               f"{vocab.number_zero + vocab.number_count}) after IMAGE_START at {i}, got {ids[j]}")
    sizes.append(s * vocab.size_unit)
  h, w = sizes
  end = first + content_length(h, w)  # IMAGE_END
  if end >= n:
    _fail(n, f"unterminated frame started at {i}: a {h}x{w} frame needs IMAGE_END at {end}, "
             f"but the sequence has {n} tokens")
  grid = content_grid(ids[i:end + 1], h, w)
  ok = np.concatenate([vocab.is_visual(grid[:, :w]), grid[:, w:] == vocab.newline], axis=1)
  ok |= grid == vocab.mask  # a masked slot may stand in for a code or a newline
  if not ok.all():
    r, c = np.argwhere(~ok)[0]
    j, got = first + r * row_length(w) + c, int(grid[r, c])
    if c == w:
      _fail(j, f"row {r} of the frame at {i} should end with NEWLINE ({vocab.newline}) after {w} "
               f"codes (size tokens say {h}x{w}), got {got}: row length disagrees with the size "
               "tokens")
    if got == vocab.newline:
      _fail(j, f"NEWLINE at column {c} of row {r} of the frame at {i}: rows have {w} codes per "
               f"the size tokens ({h}x{w}): row length disagrees with the size tokens")
    _fail(j, f"expected a visual code in [{vocab.visual_offset}, "
             f"{vocab.visual_offset + vocab.visual_size}) or MASK at row {r}, column {c} of the "
             f"frame at {i}, got {got}")
  if ids[end] != vocab.image_end:
    _fail(end, f"expected IMAGE_END ({vocab.image_end}) closing the {h}x{w} frame started at {i}, "
               f"got {ids[end]}")
  return h, w, end


def parse(ids: Sequence[int] | np.ndarray, vocab: Vocab = LUMOS,
          strides: tuple[int, int, int] = LUMOS_STRIDES) -> Layout:
  """Parses one sample's token ids into its `Layout` (LUMOS_REFERENCE.md sections 1.4 and 2.3).

  Frames are blocks IMAGE_START .. IMAGE_END (inclusive) inside a video span; every token of a frame
  block sees the whole block, everything else is causal. A video span still open at the end of the
  sequence is accepted (a generation prefix); an unterminated frame is not.

  Raises:
    ValueError naming the token index and what was expected, for ids out of the vocabulary,
    unterminated frames, rows disagreeing with the size tokens, non-code ids in code slots, frames
    outside a video span, and stray IMAGE_END / NEWLINE / VIDEO_END tokens.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"token ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
  n = len(ids)
  bad = np.flatnonzero((ids < 0) | (ids >= vocab.size))
  if bad.size:
    _fail(int(bad[0]), f"id {ids[bad[0]]} outside the vocabulary [0, {vocab.size})")

  p = np.arange(n, dtype=np.int32)
  k_end = p + 1
  frame = np.full(n, -1, np.int32)
  row = np.full(n, -1, np.int32)
  col = np.full(n, -1, np.int32)
  code = np.zeros(n, bool)

  structural = np.flatnonzero(np.isin(
      ids, [vocab.video_start, vocab.video_end, vocab.image_start, vocab.image_end, vocab.newline]))
  in_video, n_frames, s = False, 0, 0
  while s < len(structural):
    i = int(structural[s])
    tok = ids[i]
    if tok == vocab.video_start:
      if in_video:
        _fail(i, "VIDEO_START inside an open video span (expected VIDEO_END first)")
      in_video = True
    elif tok == vocab.video_end:
      if not in_video:
        _fail(i, "VIDEO_END without a preceding VIDEO_START")
      in_video = False
    elif tok == vocab.image_start:
      if not in_video:
        _fail(i, "frame (IMAGE_START) outside a video span: expected VIDEO_START before it")
      h, w, end = _parse_frame(ids, i, vocab)
      frame[i:end + 1] = n_frames
      k_end[i:end + 1] = end + 1
      first = i + FRAME_HEADER
      rr, cc = np.divmod(np.arange(content_length(h, w), dtype=np.int32), row_length(w))
      row[first:end], col[first:end] = rr, cc
      code[first:end] = cc < w
      n_frames += 1
      s = int(np.searchsorted(structural, end + 1))
      continue
    elif tok == vocab.image_end:
      _fail(i, "IMAGE_END outside a frame (no matching IMAGE_START)")
    else:
      _fail(i, "NEWLINE outside a frame")
    s += 1

  content = row >= 0
  positions = np.stack([p, p, p], axis=1)
  if content.any():
    p0 = int(np.argmax(content))  # first content token of the sample's first frame
    t_h_w = np.stack([frame * strides[0], row * strides[1], col * strides[2]], axis=1) + p0
    positions[content] = t_h_w[content]
  return Layout(positions=positions.astype(np.int32), index=p, k_start=np.zeros(n, np.int32),
                k_end=k_end.astype(np.int32), frame=frame, content=content, code=code, row=row,
                col=col, valid=np.ones(n, bool))


def video_suffix(ids: np.ndarray, vocab: Vocab = LUMOS) -> np.ndarray:
  """The text-dropped (unconditional) form: everything from the first VIDEO_START on.

  Used for the 10% CFG text drop in training and as the sampler's unconditional sequence.
  """
  ids = np.asarray(ids)
  starts = np.flatnonzero(ids == vocab.video_start)
  if not starts.size:
    raise ValueError("sequence has no VIDEO_START: nothing to keep without the text")
  return ids[starts[0]:]


def cut_frames(ids: np.ndarray, layout: Layout, n: int, vocab: Vocab = LUMOS) -> np.ndarray:
  """Keeps the first `n` frames of a single-video sample and closes it with VIDEO_END, SEP.

  Samples with at most `n` frames come back unchanged. Header tokens are not rewritten (see
  lumos_jax.data.official for the official fps/duration rewrite).
  """
  ids = np.asarray(ids)
  ends = np.flatnonzero((layout.frame >= 0) & (ids == vocab.image_end))
  if n < 1:
    raise ValueError(f"cannot cut to {n} frames: keep at least one")
  if len(ends) <= n:
    return ids
  return np.concatenate([ids[:ends[n - 1] + 1], video_trailer(vocab)]).astype(ids.dtype)


def pack(layouts: Sequence[Layout], length: int) -> Layout:
  """Concatenates sample layouts into one row of `length` tokens, padding the rest.

  Each sample keeps its own positions and only attends inside itself (k_start = its offset).
  A padding query attends only to itself, so no real query ever sees a padding key and no row of
  the attention is empty.
  """
  total = sum(len(x) for x in layouts)
  if total > length:
    raise ValueError(f"samples hold {total} tokens, more than the row length {length}")
  parts, offset = [], 0
  for x in [*layouts, padding(length - total)]:
    parts.append(dataclasses.replace(x, k_start=x.k_start + offset, k_end=x.k_end + offset))
    offset += len(x)
  return Layout(**{f.name: np.concatenate([getattr(x, f.name) for x in parts])
                   for f in dataclasses.fields(Layout)})


def padding(n: int) -> Layout:
  """`n` padding tokens at position 0, each attending only to itself (`pack` places them)."""
  q, minus1 = np.arange(n, dtype=np.int32), lambda: np.full(n, -1, np.int32)
  return Layout(positions=np.zeros((n, 3), np.int32), index=q * 0, k_start=q, k_end=q + 1,
                frame=minus1(), content=np.zeros(n, bool), code=np.zeros(n, bool), row=minus1(),
                col=minus1(), valid=np.zeros(n, bool))


def pad(layout: Layout, length: int) -> Layout:
  """Pads one sample's layout to `length` tokens (see `pack`)."""
  return pack([layout], length)
