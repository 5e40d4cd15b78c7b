"""Cross-check of token layout, attention mask and MM-RoPE against an independent reference.

What this checks
----------------
`lumos_jax.tokens.parse` (MM-RoPE positions, content flag, frame index, block-causal attention mask)
and `lumos_jax.rope.angles` (MM-RoPE angles) are compared EXACTLY with a naive reference, on real
official Lumos-1 sample records (`../shared/data/lumos_official_samples`):

  * video record id 0 cut to its first 3 latent frames (everything up to and including the third
    frame's image_end 8196, then closed with [9005, 8710]);
  * the same cut video's CFG-unconditional form (the suffix starting at video_start 9004, whose P0
    is 6 per LUMOS_REFERENCE.md section 1.4);
  * image record id 0, whole.

It also asserts the data-format facts of LUMOS_REFERENCE.md section 8 on those records, and encodes
the worked example of section 1.5 (table of positions, P0, inv_freq values, example angles) so that
the reference itself is checked against the document, not only against the project.

Why the reference is independent
--------------------------------
Everything in the "reference" section below was written from LUMOS_REFERENCE.md sections 1, 2, 8
and 12 alone, without reading the project's implementation: plain Python loops over the tokens
(frame counter in steps of 4, Hlat*(Wlat+1) content slots after every image_start, P0 = first
content index, non-content tokens at (p, p, p)), a dense boolean mask `causal OR same frame block`
built with numpy broadcasting, and angles `pos * inv_freq` per frequency with the axis chosen by
`f mod 16`. Expected values never come from the project's outputs; the angles given to the project
are computed from the reference's own positions.
"""
import json

import numpy as np
import pytest

from lumos_jax.data.safe_pickle import load

# ------------------------------------------------------------------------------------------------
# Independent reference (LUMOS_REFERENCE.md sections 1.1-1.4, 2.1-2.3, 12)
# ------------------------------------------------------------------------------------------------

BOS = 0
IMAGE_END = 8196
IMAGE_START = 8197
SEP = 8710
NEWLINE = 8803
SIZE_ZERO = 8804
MASK = 9003
VIDEO_START = 9004
VIDEO_END = 9005
VIS_START = 65536
VIS_END = 129535  # inclusive
STRIDE_T, STRIDE_H, STRIDE_W = 4, 8, 8

T_OFFSETS = (0, 1, 2, 3)
H_OFFSETS = (4, 5, 8, 9, 12, 13)
W_OFFSETS = (6, 7, 10, 11, 14, 15)


def official_size_to_latent(tok):
  """Section 1.4 step 3: Hlat / Wlat = (tok - 8804) * 32 // 8."""
  return (tok - SIZE_ZERO) * 32 // 8


def reference_layout(tokens, size_to_latent=official_size_to_latent):
  """Positions [L,3], content [L], frame [L] and P0 of one unpadded sequence, from the document.

  Returns a dict with numpy arrays: positions (int64), content (bool), frame (int64), and p0 (int).
  """
  tokens = [int(t) for t in tokens]
  n = len(tokens)

  # 1.4 steps 2-4: every image_start begins a frame; frame counter starts at -4, +4 per frame.
  content = np.zeros(n, dtype=bool)
  thw = np.zeros((n, 3), dtype=np.int64)  # unshifted (t, h, w) of content slots
  t_counter = -STRIDE_T
  for i, tok in enumerate(tokens):
    if tok != IMAGE_START:
      continue
    t_counter += STRIDE_T
    hlat = size_to_latent(tokens[i + 1])
    wlat = size_to_latent(tokens[i + 2])
    slot = i + 3
    for row in range(hlat):
      for col in range(wlat + 1):  # col == wlat is the newline closing the row
        content[slot] = True
        thw[slot] = (t_counter, STRIDE_H * row, STRIDE_W * col)
        slot += 1

  # 1.4 step 5: P0 is the raw index of the first content token of the sequence.
  p0 = None
  for i in range(n):
    if content[i]:
      p0 = i
      break

  # 1.4 steps 1, 5, 6: content tokens get (t,h,w)+P0; everything else its raw index on all axes.
  positions = np.zeros((n, 3), dtype=np.int64)
  for i in range(n):
    if content[i]:
      positions[i] = thw[i] + p0
    else:
      positions[i] = (i, i, i)

  # 2.3: frame id = running count of image_start; segment = image_start..image_end inclusive,
  # only for segments inside a complete video span (video_start .. video_end).
  video_spans = []
  for i, tok in enumerate(tokens):
    if tok == VIDEO_START:
      for j in range(i + 1, n):
        if tokens[j] == VIDEO_END:
          video_spans.append((i, j))
          break
  frame = np.full(n, -1, dtype=np.int64)
  count = -1
  for i, tok in enumerate(tokens):
    if tok != IMAGE_START:
      continue
    count += 1
    end = None
    for j in range(i + 1, n):
      if tokens[j] == IMAGE_END:
        end = j
        break
    if end is None:
      continue
    if any(s < i and end < e for s, e in video_spans):
      for j in range(i, end + 1):
        frame[j] = count

  return {"positions": positions, "content": content, "frame": frame, "p0": p0}


def reference_mask(frame):
  """Section 2.3: allowed[q, k] = (k <= q) OR (q, k in the same frame block). Dense bool [L, L]."""
  n = frame.shape[0]
  idx = np.arange(n)
  allowed = idx[None, :] <= idx[:, None]
  same_block = frame[:, None] == frame[None, :]
  same_block &= (frame >= 0)[:, None]
  allowed |= same_block
  return allowed


def axis_of_frequency(f):
  """Section 1.2: axis (0=t, 1=h, 2=w) of frequency index f, decided by f mod 16."""
  r = f % 16
  if r in T_OFFSETS:
    return 0
  if r in H_OFFSETS:
    return 1
  if r in W_OFFSETS:
    return 2
  raise AssertionError(f"offset {r} not assigned")


def reference_inv_freq(head_dim, theta=10000.0):
  """Section 12: inv_freq = 1 / (theta ** (arange(0, d, 2) / d)), all in float32."""
  d = head_dim
  return 1.0 / (np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))


def reference_angles(positions, head_dim, theta=10000.0):
  """Sections 1.1-1.3, 12: angle[i, f] = float32(pos[i, axis(f)]) * inv_freq[f] (float32).

  Non-content tokens carry (p, p, p), so the same rule gives their plain 1-D RoPE angle.
  """
  inv_freq = reference_inv_freq(head_dim, theta)
  assert inv_freq.dtype == np.float32
  n = positions.shape[0]
  out = np.zeros((n, head_dim // 2), dtype=np.float32)
  for f in range(head_dim // 2):
    pos = positions[:, axis_of_frequency(f)].astype(np.float32)
    out[:, f] = pos * inv_freq[f]
  assert out.dtype == np.float32
  return out


# ------------------------------------------------------------------------------------------------
# Section 1.5 worked example: the reference against the document's table
# ------------------------------------------------------------------------------------------------


def _worked_example_tokens():
  """BOS txt txt txt SEP | VID_START DUR FPS | [IMG_START Htok Wtok v v NL v v NL IMG_END] x2 |
  VID_END.

  The 2x2 grid cannot be spelt with official size tokens (Hlat = (tok-8804)*4), so the example uses
  made-up size tokens 8806 read as "2 latents" via a custom size decoder.
  """
  frame_block = [IMAGE_START, 8806, 8806, VIS_START + 1, VIS_START + 2, NEWLINE,
                 VIS_START + 3, VIS_START + 4, NEWLINE, IMAGE_END]
  return ([BOS, 100, 101, 102, SEP, VIDEO_START, 8806, 8816] + frame_block + frame_block +
          [VIDEO_END])


def _worked_example_layout():
  return reference_layout(_worked_example_tokens(), size_to_latent=lambda tok: tok - SIZE_ZERO)


def test_reference_reproduces_worked_example_table():
  tokens = _worked_example_tokens()
  assert len(tokens) == 29
  lay = _worked_example_layout()
  assert lay["p0"] == 11

  # Table of section 1.5: p -> (t, h, w) for flag=1 rows.
  table = {
      11: (11, 11, 11), 12: (11, 11, 19), 13: (11, 11, 27),
      14: (11, 19, 11), 15: (11, 19, 19), 16: (11, 19, 27),
      21: (15, 11, 11), 22: (15, 11, 19), 23: (15, 11, 27),
      24: (15, 19, 11), 25: (15, 19, 19), 26: (15, 19, 27),
  }
  for p in range(29):
    if p in table:
      assert lay["content"][p], p
      assert tuple(lay["positions"][p]) == table[p], p
    else:  # 0-10, 17-20, 27, 28: flag 0, 1-D position
      assert not lay["content"][p], p
      assert tuple(lay["positions"][p]) == (p, p, p), p

  # Frame blocks (2.3): image_start..image_end inclusive, frames 0 and 1.
  expected_frame = np.full(29, -1)
  expected_frame[8:18] = 0
  expected_frame[18:28] = 1
  np.testing.assert_array_equal(lay["frame"], expected_frame)

  mask = reference_mask(lay["frame"])
  assert mask[8, 17] and mask[17, 8]  # image_start sees its own image_end and vice versa
  assert mask[11, 16] and not mask[16, 21]  # bidirectional inside frame 0, causal across frames
  assert mask[21, 16] and not mask[17, 18]
  assert not mask[7, 8] and not mask[4, 5]  # header / text are causal
  assert mask[28].all()  # video_end sees everything
  assert not mask[28 - 1, 28]
  # Section 12: allowed keys of every query form a prefix.
  last = np.array([np.nonzero(row)[0].max() for row in mask])
  np.testing.assert_array_equal(mask, np.arange(29)[None, :] <= last[:, None])


def test_reference_axis_assignment_matches_section_1_2():
  for head_dim, t_set, h_set, w_set in [
      (64, {0, 1, 2, 3, 16, 17, 18, 19},
       {4, 5, 8, 9, 12, 13, 20, 21, 24, 25, 28, 29},
       {6, 7, 10, 11, 14, 15, 22, 23, 26, 27, 30, 31}),
      (128, {o + 16 * k for k in range(4) for o in T_OFFSETS},
       {o + 16 * k for k in range(4) for o in H_OFFSETS},
       {o + 16 * k for k in range(4) for o in W_OFFSETS}),
  ]:
    axes = [axis_of_frequency(f) for f in range(head_dim // 2)]
    assert {f for f, a in enumerate(axes) if a == 0} == t_set
    assert {f for f, a in enumerate(axes) if a == 1} == h_set
    assert {f for f, a in enumerate(axes) if a == 2} == w_set
  assert sum(axis_of_frequency(f) == 0 for f in range(64)) == 16  # 2:3:3 for head_dim 128


def test_reference_reproduces_worked_example_angles():
  inv_freq = reference_inv_freq(64)
  # Document's rounded values: f = 0..7, 16, 31.
  doc = {0: 1.0, 1: 0.750, 2: 0.562, 3: 0.422, 4: 0.316, 5: 0.237, 6: 0.178, 7: 0.133,
         16: 0.01, 31: 1.33e-4}
  for f, v in doc.items():
    np.testing.assert_allclose(inv_freq[f], v, rtol=3e-3, err_msg=f"inv_freq[{f}]")
  np.testing.assert_allclose(inv_freq, 10000.0 ** (-np.arange(32) / 32.0), rtol=1e-6)

  ang = reference_angles(_worked_example_layout()["positions"], 64)
  assert ang.shape == (29, 32) and ang.dtype == np.float32
  # Token p=24, v(f1,r1,c0) at (15, 19, 11).
  np.testing.assert_allclose(ang[24, 0], 15 * 1.0, rtol=1e-6)
  np.testing.assert_allclose(ang[24, 4], 19 * 0.316, rtol=3e-3)
  np.testing.assert_allclose(ang[24, 6], 11 * 0.178, rtol=3e-3)
  np.testing.assert_allclose(ang[24, 16], 15 * 0.01, rtol=3e-3)
  # Text token p=3: every pair rotates by 3 * inv_freq[i].
  np.testing.assert_array_equal(ang[3], np.float32(3) * inv_freq)
  # Flag-0 tokens use their raw index on all channels (e.g. image_end of frame 0 at p=17).
  np.testing.assert_array_equal(ang[17], np.float32(17) * inv_freq)


def test_project_angles_on_worked_example():
  from lumos_jax import rope
  positions = _worked_example_layout()["positions"].astype(np.int32)
  for head_dim in (64, 128):
    got = np.asarray(rope.angles(positions, head_dim, theta=10000.0, variant="mm"))
    assert got.shape == (29, head_dim // 2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, reference_angles(positions, head_dim))


# ------------------------------------------------------------------------------------------------
# Real official records
# ------------------------------------------------------------------------------------------------


def _load_record(root, kind, record_id):
  """Record `record_id` of test_{kind}/merge-record.json, loaded with the data-only unpickler."""
  records = json.loads((root / "pre_tokenize" / "data" / f"test_{kind}" / "merge-record.json")
                       .read_text())
  (entry,) = [r for r in records if r["id"] == record_id]
  rec = load(root / entry["file"])
  assert rec["id"] == record_id
  assert len(rec["token"]) == len(rec["label"]) == entry["len"]
  return rec


def _check_section8_record(rec, *, header, size_tokens, n_frames, len_range, prefix_range):
  tokens = np.asarray(rec["token"], dtype=np.int64)
  labels = np.asarray(rec["label"], dtype=np.int64)
  assert len_range[0] <= len(tokens) <= len_range[1]
  assert tokens[0] == BOS
  first_sep = int(np.nonzero(tokens == SEP)[0][0])
  assert prefix_range[0] <= first_sep + 1 <= prefix_range[1]  # text prefix BOS..8710
  assert tokens[21] == 65539 and tokens[25] == 65540  # frame / fps placeholders
  assert list(tokens[first_sep + 1:first_sep + 4]) == list(header)
  assert list(tokens[-2:]) == [VIDEO_END, SEP]
  # Labels: -100 up to and including the first 8710, equal to the tokens from 9004 on.
  assert (labels[:first_sep + 1] == -100).all()
  np.testing.assert_array_equal(labels[first_sep + 1:], tokens[first_sep + 1:])

  hlat, wlat = (official_size_to_latent(s) for s in size_tokens)
  block = hlat * (wlat + 1) + 4
  starts = np.nonzero(tokens == IMAGE_START)[0]
  ends = np.nonzero(tokens == IMAGE_END)[0]
  assert len(starts) == len(ends) == n_frames
  np.testing.assert_array_equal(starts, first_sep + 4 + block * np.arange(n_frames))
  np.testing.assert_array_equal(ends, starts + block - 1)
  assert ends[-1] == len(tokens) - 3
  for s in starts:
    assert tuple(tokens[s + 1:s + 3]) == tuple(size_tokens)
    grid = tokens[s + 3:s + block - 1].reshape(hlat, wlat + 1)
    assert (grid[:, -1] == NEWLINE).all()
    assert ((grid[:, :-1] >= VIS_START) & (grid[:, :-1] <= VIS_END)).all()
  assert (tokens == NEWLINE).sum() == n_frames * hlat
  return hlat, wlat, block


def test_video_record_section8_facts(official_samples):
  rec = _load_record(official_samples, "video", 0)
  hlat, wlat, block = _check_section8_record(
      rec, header=(VIDEO_START, 8811, 8816), size_tokens=(8816, 8825), n_frames=22,
      len_range=(90119, 90208), prefix_range=(266, 355))
  assert (hlat, wlat, block) == (48, 84, 4084)


def test_image_record_section8_facts(official_samples):
  rec = _load_record(official_samples, "image", 0)
  hlat, wlat, block = _check_section8_record(
      rec, header=(VIDEO_START, 8805, 8805), size_tokens=(8817, 8822), n_frames=1,
      len_range=(4037, 4111), prefix_range=(232, 306))
  assert (hlat, wlat, block) == (52, 72, 3800)


def _video_first3(root):
  tokens = list(_load_record(root, "video", 0)["token"])
  ends = [i for i, t in enumerate(tokens) if t == IMAGE_END]
  cut = tokens[:ends[2] + 1] + [VIDEO_END, SEP]
  start = tokens.index(IMAGE_START)
  assert ends[2] == start + 3 * 4084 - 1  # three 4084-token frame blocks
  return cut


def _video_first3_uncond(root):
  cut = _video_first3(root)
  return cut[cut.index(VIDEO_START):]  # CFG unconditional sequence: video-only suffix


def _image_whole(root):
  return list(_load_record(root, "image", 0)["token"])


CASES = {
    # name: (token builder, number of frames, Hlat, Wlat)
    "video_first3": (_video_first3, 3, 48, 84),
    "video_first3_uncond": (_video_first3_uncond, 3, 48, 84),
    "image": (_image_whole, 1, 52, 72),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, official_samples):
  build, n_frames, hlat, wlat = CASES[request.param]
  tokens = np.asarray(build(official_samples), dtype=np.int32)
  ref = reference_layout(tokens)
  return {"name": request.param, "tokens": tokens, "ref": ref, "n_frames": n_frames,
          "hlat": hlat, "wlat": wlat}


@pytest.fixture(scope="module")
def project_layout(case):
  from lumos_jax import tokens as lumos_tokens
  return lumos_tokens.parse(case["tokens"])


def test_reference_layout_facts(case):
  """Sections 1.4 / 2.4 / 8 facts that the reference itself must satisfy on real records."""
  tokens, ref = case["tokens"], case["ref"]
  hlat, wlat, n_frames = case["hlat"], case["wlat"], case["n_frames"]
  n = len(tokens)
  first_start = int(np.nonzero(tokens == IMAGE_START)[0][0])
  # P0 is the index of the first content token = first image_start + 3.
  assert ref["p0"] == first_start + 3
  assert ref["content"][ref["p0"]] and not ref["content"][:ref["p0"]].any()
  if case["name"] == "video_first3_uncond":
    assert ref["p0"] == 6  # section 1.4: the unconditional sequence has P0 = 6
  assert ref["content"].sum() == n_frames * hlat * (wlat + 1)
  assert set(tokens[ref["content"]].tolist()) <= set(range(VIS_START, VIS_END + 1)) | {NEWLINE}
  # Content grid positions: strides (4, 8, 8) on top of P0.
  block = hlat * (wlat + 1) + 4
  for k in range(n_frames):
    s = first_start + k * block
    grid = ref["positions"][s + 3:s + block - 1].reshape(hlat, wlat + 1, 3) - ref["p0"]
    np.testing.assert_array_equal(grid[..., 0], np.full((hlat, wlat + 1), 4 * k))
    np.testing.assert_array_equal(grid[..., 1], np.broadcast_to(8 * np.arange(hlat)[:, None],
                                                                (hlat, wlat + 1)))
    np.testing.assert_array_equal(grid[..., 2], np.broadcast_to(8 * np.arange(wlat + 1)[None, :],
                                                                (hlat, wlat + 1)))
    assert (ref["frame"][s:s + block] == k).all()
  # Non-content tokens at their raw index; positions after a block are not compressed.
  raw = np.arange(n)
  for axis in range(3):
    np.testing.assert_array_equal(ref["positions"][~ref["content"], axis], raw[~ref["content"]])
  assert (ref["frame"] >= 0).sum() == n_frames * block
  assert tuple(ref["positions"][-1]) == (n - 1,) * 3


def test_project_positions_match_reference(case, project_layout):
  got = np.asarray(project_layout.positions)
  assert got.shape == (len(case["tokens"]), 3)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, case["ref"]["positions"])


def test_project_content_matches_reference(case, project_layout):
  got = np.asarray(project_layout.content)
  assert got.dtype == np.bool_
  np.testing.assert_array_equal(got, case["ref"]["content"])


def test_project_frame_matches_reference(case, project_layout):
  got = np.asarray(project_layout.frame)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, case["ref"]["frame"])


def test_project_mask_matches_reference(case, project_layout):
  ref = reference_mask(case["ref"]["frame"])
  n = ref.shape[0]
  idx = np.arange(n)
  # Section 12: allowed keys of every query form a prefix of the sequence.
  ref_end = ref.sum(axis=1)
  assert ref[:, 0].all()
  np.testing.assert_array_equal(ref, idx[None, :] < ref_end[:, None])

  k_start = np.asarray(project_layout.k_start)
  k_end = np.asarray(project_layout.k_end)
  assert k_start.dtype == np.int32 and k_end.dtype == np.int32
  np.testing.assert_array_equal(k_start, np.zeros(n, dtype=np.int32))
  np.testing.assert_array_equal(k_end, ref_end)
  got = (idx[None, :] >= k_start[:, None]) & (idx[None, :] < k_end[:, None])
  np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_project_angles_match_reference(case, head_dim):
  from lumos_jax import rope
  positions = case["ref"]["positions"].astype(np.int32)  # the reference's, not the project's
  want = reference_angles(positions, head_dim)
  got = np.asarray(rope.angles(positions, head_dim, theta=10000.0, variant="mm"))
  assert got.shape == want.shape
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, want)
