"""Sequence layout: building, parsing, padding/packing and malformed-sequence errors."""
import re

import numpy as np
import pytest

from helpers import VOCAB, random_packed_batch
from lumos_jax import tokens


def _video(t=2, h=3, w=4, text=(100, 101, 102)):
  frames = np.arange(t * h * w).reshape(t, h, w) % VOCAB.visual_size
  return tokens.build(list(text), frames, fps=12, duration=2, vocab=VOCAB), frames


def test_build_official_layout():
  frames = np.array([[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]])
  ids = tokens.build([500, 501], frames, fps=12, duration=2)  # official vocabulary, 4x4 latent
  v = tokens.LUMOS
  expected_head = [0, 500, 501, 8710, 9004, 8806, 8816, 8197, 8805, 8805]
  assert ids[:10].tolist() == expected_head
  assert ids[10:15].tolist() == [65536, 65537, 65538, 65539, v.newline]
  assert ids[-3:].tolist() == [8196, 9005, 8710]
  assert len(ids) == 10 + 4 * 5 + 3


def test_parse_roundtrip_fields():
  ids, frames = _video()
  lay = tokens.parse(ids, VOCAB)
  first = 5 + 3  # BOS + 3 text + SEP, then the video header
  assert ids[first] == VOCAB.image_start
  block = 3 + 3 * 5 + 1
  for f in range(2):
    s = first + f * block
    np.testing.assert_array_equal(lay.frame[s:s + block], f)
    np.testing.assert_array_equal(lay.k_end[s:s + block], s + block)
    grid = ids[s + 3:s + block - 1].reshape(3, 5)
    np.testing.assert_array_equal(grid[:, :4] - VOCAB.visual_offset, frames[f])
    np.testing.assert_array_equal(lay.row[s + 3:s + block - 1].reshape(3, 5),
                                  np.broadcast_to(np.arange(3)[:, None], (3, 5)))
    np.testing.assert_array_equal(lay.col[s + 3:s + block - 1].reshape(3, 5),
                                  np.broadcast_to(np.arange(5)[None], (3, 5)))
  outside = lay.frame < 0
  np.testing.assert_array_equal(lay.k_end[outside], np.flatnonzero(outside) + 1)
  assert lay.content.sum() == 2 * 15 and lay.code.sum() == 2 * 12
  p0 = first + 3
  np.testing.assert_array_equal(lay.positions[p0], [p0, p0, p0])
  np.testing.assert_array_equal(lay.positions[p0 + block + 5 + 2], [p0 + 4, p0 + 8, p0 + 16])
  assert lay.max_lookahead == block - 1


def test_frame_layout_helpers_match_build_and_parse():
  h, w = 3, 4
  assert tokens.frame_block_length(h, w) == 3 + 3 * 5 + 1  # stated independently of tokens.py
  assert tokens.content_length(h, w) == 3 * 5
  ids, frames = _video(h=h, w=w)
  lay = tokens.parse(ids, VOCAB)
  block = tokens.frame_block_length(h, w)
  first = 5 + tokens.VIDEO_HEADER
  blocks = ids[first:first + 2 * block].reshape(2, block)
  np.testing.assert_array_equal(tokens.frame_codes(blocks, h, w) - VOCAB.visual_offset, frames)
  code = tokens.code_slots(h, w)
  np.testing.assert_array_equal(lay.code[first:first + block], code)
  assert code.sum() == h * w and not code[:3].any() and not code[-1]
  assert len(ids) - first - 2 * block == tokens.VIDEO_TRAILER
  with pytest.raises(ValueError, match="frame block has"):
    tokens.frame_codes(blocks[:, :-1], h, w)


def _error(ids, pattern):
  with pytest.raises(ValueError, match=pattern):
    tokens.parse(np.asarray(ids), VOCAB)


def test_malformed_unterminated_frame():
  ids, _ = _video()
  cut = ids[:-5]  # inside the last frame
  _error(cut, rf"token {len(cut)}: unterminated frame")


def test_malformed_row_length():
  ids, _ = _video()
  bad = ids.copy()
  s = int(np.flatnonzero(ids == VOCAB.image_start)[0])
  bad[s + 3 + 4] = VOCAB.visual_offset  # the first NEWLINE replaced by a code: a 5-code row
  _error(bad, rf"token {s + 7}: row 0 .* row length disagrees")
  bad = ids.copy()
  bad[s + 3 + 2] = VOCAB.newline  # a NEWLINE after 2 codes
  _error(bad, rf"token {s + 5}: NEWLINE at column 2 .* row length disagrees")


def test_malformed_ids():
  ids, _ = _video()
  bad = ids.copy()
  bad[2] = VOCAB.size
  _error(bad, r"token 2: id 840 outside the vocabulary")
  bad = ids.copy()
  s = int(np.flatnonzero(ids == VOCAB.image_start)[0])
  bad[s + 4] = 100  # a text id in a code slot
  _error(bad, rf"token {s + 4}: expected a visual code")
  bad = ids.copy()
  bad[s + 1] = 100  # not a size token
  _error(bad, rf"token {s + 1}: expected a size token")


def test_malformed_frame_outside_video():
  ids, _ = _video()
  vs = int(np.flatnonzero(ids == VOCAB.video_start)[0])
  bad = np.delete(ids, vs)
  _error(bad, r"frame \(IMAGE_START\) outside a video span")
  _error([VOCAB.bos, VOCAB.image_end], r"token 1: IMAGE_END outside a frame")
  _error([VOCAB.bos, VOCAB.video_end], r"token 1: VIDEO_END without")


def test_masked_slots_and_open_video_accepted():
  ids, _ = _video()
  lay = tokens.parse(ids, VOCAB)
  masked = np.where(lay.content, VOCAB.mask, ids)  # MASK in every slot, newlines included
  lay_masked = tokens.parse(masked, VOCAB)
  np.testing.assert_array_equal(lay_masked.positions, lay.positions)
  np.testing.assert_array_equal(lay_masked.code, lay.code)
  open_prefix = ids[:-2]  # without VIDEO_END, SEP: a generation prefix
  np.testing.assert_array_equal(tokens.parse(open_prefix, VOCAB).k_end, lay.k_end[:-2])


def test_uncond_form_starts_at_video_start():
  frames = np.zeros((1, 2, 2), np.int64)
  ids = tokens.build(None, frames, fps=1, duration=1, vocab=VOCAB)
  assert ids[0] == VOCAB.video_start
  assert int(np.argmax(tokens.parse(ids, VOCAB).content)) == 6  # P0 = 6 (section 1.4)


def test_pack_isolates_samples_and_padding():
  rng = np.random.default_rng(0)
  ids, lay = random_packed_batch(rng, batch=4, length=160)
  for b in range(4):
    q = np.arange(160)
    assert np.all(lay["k_start"][b] <= q) and np.all(q < lay["k_end"][b])
    pad = ~lay["valid"][b]
    real = np.flatnonzero(~pad)
    for k in np.flatnonzero(pad):  # no real query sees a padding key
      assert not np.any((lay["k_start"][b][real] <= k) & (k < lay["k_end"][b][real]))
    np.testing.assert_array_equal(lay["k_end"][b][pad], np.flatnonzero(pad) + 1)
    starts = np.unique(lay["k_start"][b][~pad])
    for s in starts:  # each packed sample restarts its positions at 0
      assert lay["index"][b][s] == 0 and ids[b][s] in (VOCAB.bos, VOCAB.video_start)


def test_pack_rejects_overflow():
  ids, _ = _video()
  with pytest.raises(ValueError, match=re.escape(f"samples hold {len(ids)} tokens")):
    tokens.pad(tokens.parse(ids, VOCAB), len(ids) - 1)


def test_compact_byte_text_roundtrip():
  ids = VOCAB.encode_text("a red circle moves left")
  assert min(ids) >= VOCAB.byte_text_offset and max(ids) < VOCAB.visual_offset
  assert VOCAB.decode_text(ids) == "a red circle moves left"
  with pytest.raises(ValueError, match="no built-in text tokenizer"):
    tokens.LUMOS.encode_text("hi")


def test_video_suffix_and_cut_frames():
  ids, frames = _video(t=3)
  suffix = tokens.video_suffix(ids, VOCAB)
  assert suffix[0] == VOCAB.video_start and len(suffix) == len(ids) - 5
  lay = tokens.parse(ids, VOCAB)
  cut = tokens.cut_frames(ids, lay, 2, VOCAB)
  expected = tokens.build([100, 101, 102], frames[:2], fps=12, duration=2, vocab=VOCAB)
  np.testing.assert_array_equal(cut, expected)
  np.testing.assert_array_equal(tokens.cut_frames(ids, lay, 5, VOCAB), ids)
  with pytest.raises(ValueError, match="no VIDEO_START"):
    tokens.video_suffix(np.array([0, 100, 1]), VOCAB)
