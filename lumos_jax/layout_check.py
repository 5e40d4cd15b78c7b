"""The strict layout check of one training sample (LUMOS_REFERENCE.md section 2.2).

`tokens.parse` checks that frames are well formed wherever they are; a training sample must also
have the official shape around them, exactly:

  prompt   [BOS] text* [SEP]             (absent in the text-dropped form, which starts at
                                          VIDEO_START: the CFG unconditional sequence)
  header   [VIDEO_START, NUM+duration, NUM+fps]       fps >= 1, duration >= 0 (whole seconds:
                                                      short synthetic videos round it to 0)
  frames   T >= 1 blocks [IMAGE_START, NUM+H/u, NUM+W/u] + H x (W codes + [NEWLINE]) + [IMAGE_END],
           back to back, every one with the size tokens of the first
  trailer  [VIDEO_END, SEP], the last two tokens

Text ids are those that are neither special (BOS, SEP, IMAGE_START/END, NEWLINE, MASK,
VIDEO_START/END), nor integer tokens, nor visual codes (e.g. an unfilled prompt placeholder 65539
is a visual id). MASK appears nowhere: the pipeline masks a sample itself, and a stored MASK
would become a loss target. The header encodes the frame count only through the official timing
rule latent frames = 1 + ceil((fps * duration - 1) / 4), which holds for official records but
not for synthetic or pipeline-cut ones; the official import checks it (lumos_jax.data.official).
The frame size is encoded by the size tokens: `parse` checks every frame's rows against its own,
and here all frames must carry the same.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lumos_jax import tokens
from lumos_jax.tokens import FRAME_HEADER, VIDEO_HEADER, Layout, Vocab


def _fail(i: int, what: str):
  raise ValueError(f"malformed sequence at token {i}: {what}")


def _specials(vocab: Vocab) -> list[int]:
  return [vocab.bos, vocab.sep, vocab.image_start, vocab.image_end, vocab.newline, vocab.mask,
          vocab.video_start, vocab.video_end]


def is_text(ids: np.ndarray, vocab: Vocab) -> np.ndarray:
  """bool [L]: ids that may stand in a prompt's text (not special, integer or visual)."""
  ids = np.asarray(ids)
  number = (ids >= vocab.number_zero) & (ids < vocab.number_zero + vocab.number_count)
  return ~np.isin(ids, _specials(vocab)) & ~number & (ids >= 0) & (ids < vocab.visual_offset)


def _prompt_end(ids: np.ndarray, vocab: Vocab) -> int:
  """Index of the video header: after [BOS] text [SEP], or 0 in the text-dropped form."""
  if ids[0] == vocab.video_start:
    return 0
  if ids[0] != vocab.bos:
    _fail(0, f"expected BOS ({vocab.bos}) or, text-dropped, VIDEO_START ({vocab.video_start}), "
             f"got {ids[0]}")
  seps = np.flatnonzero(ids == vocab.sep)
  if not seps.size:
    _fail(len(ids), f"the prompt opened by BOS has no SEP ({vocab.sep})")
  sep = int(seps[0])
  bad = np.flatnonzero(~is_text(ids[1:sep], vocab))
  if bad.size:
    j = 1 + int(bad[0])
    _fail(j, f"expected a text id or SEP ({vocab.sep}) in the prompt, got {ids[j]} (a special, "
             "integer or visual id)")
  return sep + 1


def _header(ids: np.ndarray, v: int, vocab: Vocab) -> None:
  """Checks [VIDEO_START, NUM+duration, NUM+fps] at v: duration >= 0, fps >= 1."""
  if v + VIDEO_HEADER > len(ids):
    _fail(len(ids), f"the sequence ends inside the video header started at {v}")
  if ids[v] != vocab.video_start:
    _fail(v, f"expected VIDEO_START ({vocab.video_start}) after the prompt, got {ids[v]}")
  for j, name, least in ((v + 1, "duration", 0), (v + 2, "fps", 1)):
    value = int(ids[j]) - vocab.number_zero
    if not least <= value < vocab.number_count:
      _fail(j, f"expected the {name} token in [{vocab.number_zero + least}, "
               f"{vocab.number_zero + vocab.number_count}) in the video header, got {ids[j]}")


def _frames(ids: np.ndarray, i: int, vocab: Vocab) -> int:
  """Checks frames back to back from i, all the size of the first; returns the index after them."""
  if i >= len(ids) or ids[i] != vocab.image_start:
    _fail(min(i, len(ids)), f"expected IMAGE_START ({vocab.image_start}): a video has at least "
                            "one frame right after its header")
  size = ids[i + 1:i + FRAME_HEADER].tolist()
  h, w = ((s - vocab.number_zero) * vocab.size_unit for s in size)
  block = tokens.frame_block_length(h, w)
  k = 0
  while i < len(ids) and ids[i] == vocab.image_start:
    got = ids[i + 1:i + FRAME_HEADER].tolist()
    if got != size:
      j = i + 1 + int(got[0] == size[0])
      _fail(j, f"frame {k} has size tokens {got}, frame 0 {size}: all frames of a video must "
               "be the same size")
    i, k = i + block, k + 1  # parse has checked this block: IMAGE_END at i + block - 1
  return i


def _trailer(ids: np.ndarray, i: int, vocab: Vocab) -> None:
  """Checks [VIDEO_END, SEP] at i, ending the sequence."""
  trailer = tokens.video_trailer(vocab)
  for j, want in enumerate(trailer, i):
    if j >= len(ids):
      _fail(len(ids), f"the sequence ends before the trailer {trailer} (truncated?)")
    if ids[j] != want:
      _fail(j, f"expected {want} of the trailer {trailer} after the last frame's IMAGE_END, got "
               f"{ids[j]}")
  if i + len(trailer) != len(ids):
    _fail(i + len(trailer), f"expected the end of the sample after its trailer {trailer}, got "
                            f"{ids[i + len(trailer)]}")


def validate(ids: Sequence[int] | np.ndarray, vocab: Vocab = tokens.LUMOS,
             strides: tuple[int, int, int] = tokens.LUMOS_STRIDES) -> Layout:
  """The `Layout` of a training sample in exactly the official layout (see the module docstring).

  Accepts every closed sequence `tokens.build` makes (with or without text) and nothing else.
  Raises:
    ValueError("malformed sequence at token N: ...") naming the first offending token and what
    was expected there (including every error of `tokens.parse`).
  """
  layout = tokens.parse(ids, vocab, strides)  # ids in range; every frame block well formed
  ids = np.asarray(ids)
  if not len(ids):
    _fail(0, "empty sequence")
  masks = np.flatnonzero(ids == vocab.mask)
  if masks.size:
    _fail(int(masks[0]), f"MASK ({vocab.mask}) in a training sample (the pipeline masks it)")
  v = _prompt_end(ids, vocab)
  _header(ids, v, vocab)
  end = _frames(ids, v + VIDEO_HEADER, vocab)
  _trailer(ids, end, vocab)
  return layout
