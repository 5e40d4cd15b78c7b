"""layout_check.validate: every sequence tokens.build makes passes; each broken invariant of the
official layout is refused naming its token; the import skips and counts bad index lines."""
import json
import pickle
import re

import numpy as np
import pytest

from helpers import VOCAB, random_sample
from lumos_jax import layout_check, tokens
from lumos_jax.data import official
from lumos_jax.data.__main__ import main

LUMOS = tokens.LUMOS


def _lumos_sample(rng, text=True):
  """A random closed sequence of the official vocabulary (size unit 4)."""
  t = int(rng.integers(1, 4))
  h, w = (4 * int(x) for x in rng.integers(1, 4, size=2))
  text_ids = rng.integers(16399, 16409, size=int(rng.integers(0, 8))) if text else None
  return tokens.build(text_ids, rng.integers(0, LUMOS.visual_size, (t, h, w)),
                      fps=int(rng.integers(1, 30)), duration=int(rng.integers(1, 8)))


def test_every_built_sequence_passes_both_vocabularies():
  rng = np.random.default_rng(0)
  for k in range(400):
    ids = random_sample(rng, text=False if k % 4 == 0 else None)
    layout = layout_check.validate(ids, VOCAB)
    np.testing.assert_array_equal(layout.positions, tokens.parse(ids, VOCAB).positions)
  for k in range(150):
    layout_check.validate(_lumos_sample(rng, text=k % 3 != 0))


def _video(**kw):
  """BOS, 3 text ids, SEP, header (2 s, 5 fps), 2 frames of 2x3, trailer (compact vocabulary)."""
  frames = np.arange(12).reshape(2, 2, 3)
  return tokens.build([100, 101, 102], frames, fps=5, duration=2, vocab=VOCAB, **kw)


V0, F0 = 5, 8  # VIDEO_START and the first IMAGE_START of _video()
BLOCK = tokens.frame_block_length(2, 3)


def _refused(ids, at, pattern):
  with pytest.raises(ValueError, match=rf"malformed sequence at token {at}: .*{pattern}"):
    layout_check.validate(np.asarray(ids, np.int32), VOCAB)


def test_prompt_invariants():
  ids = _video()
  _refused(ids[1:], 0, "expected BOS")
  _refused(np.delete(ids, 4), 4, "expected a text id or SEP")  # no SEP before VIDEO_START
  for bad in (VOCAB.image_end, VOCAB.mask, VOCAB.number(3), VOCAB.visual_offset, VOCAB.bos):
    mutant = ids.copy()
    mutant[2] = bad
    with pytest.raises(ValueError, match=r"malformed sequence at token \d+"):
      layout_check.validate(mutant, VOCAB)
  mutant = ids.copy()
  mutant[2] = VOCAB.number(3)
  _refused(mutant, 2, "expected a text id or SEP")
  layout_check.validate(tokens.video_suffix(ids, VOCAB), VOCAB)  # the text-dropped form
  layout_check.validate(np.concatenate([[VOCAB.bos, VOCAB.sep], ids[V0:]]), VOCAB)  # empty text


def test_header_invariants():
  ids = _video()
  mutant = ids.copy()
  mutant[V0 + 2] = VOCAB.number(0)
  _refused(mutant, V0 + 2, "fps token in")
  mutant[V0 + 1:V0 + 3] = VOCAB.number(0), VOCAB.number(1)  # 0 s: a short synthetic video
  layout_check.validate(mutant, VOCAB)
  mutant = ids.copy()
  mutant[V0 + 1] = 150  # a text id
  _refused(mutant, V0 + 1, "duration token")
  _refused(np.delete(ids, V0 + 2), V0 + 2, "fps token")


def test_frames_invariants():
  ids = _video()
  other = tokens.build([100], np.zeros((1, 3, 3), int), fps=5, duration=2, vocab=VOCAB)
  mixed = np.concatenate([ids[:F0 + BLOCK], other[6:-2], ids[-2:]])  # frame 1 is 3x3
  _refused(mixed, F0 + BLOCK + 1, "same size")
  _refused(np.insert(ids, F0 + BLOCK, VOCAB.sep), F0 + BLOCK, "trailer")  # between frames
  _refused(np.insert(ids, F0, VOCAB.number(1)), F0, "IMAGE_START")  # after the header
  _refused(np.concatenate([ids[:F0], ids[-2:]]), F0, "at least one frame")
  masked = ids.copy()
  masked[F0 + 3] = VOCAB.mask
  _refused(masked, F0 + 3, "MASK")


def test_trailer_invariants():
  ids = _video()
  _refused(ids[:-1], len(ids) - 1, "ends before the trailer")
  _refused(np.append(ids, 150), len(ids), "end of the sample")
  open_video = _video(close=False)
  _refused(open_video, len(open_video), "ends before the trailer")
  mutant = ids.copy()
  mutant[-1] = VOCAB.bos
  _refused(mutant, len(ids) - 1, "trailer")


# ---- import: bad index lines are reported with file:line, skipped and counted -------------------

def _fake_root(tmp_path):
  """A ROOT with num2tokens.json and two official-form one-frame samples (files/0.pkl, 1.pkl)."""
  (tmp_path / "data").mkdir()
  digits = {str(n): [16399 + int(d) for d in str(n)] for n in range(1000)}
  (tmp_path / "data" / "num2tokens.json").write_text(json.dumps(digits))
  (tmp_path / "files").mkdir()
  for i in range(2):
    prompt = [LUMOS.bos, 500, official.FRAMES_PLACEHOLDER, 501, official.FPS_PLACEHOLDER, LUMOS.sep]
    video = tokens.build(None, np.full((1, 4, 4), i), fps=1, duration=1).tolist()
    ids = prompt + video
    labels = [official.IGNORE] * len(prompt) + video
    with open(tmp_path / "files" / f"{i}.pkl", "wb") as f:
      pickle.dump({"token": ids, "label": labels, "id": i}, f)
  return tmp_path


def test_import_skips_bad_index_lines(tmp_path, capsys):
  root = _fake_root(tmp_path)
  index = root / "0-of-1-record.jsonl"
  index.write_text("\n".join([json.dumps({"file": "files/0.pkl", "id": 0}), "{garbage",
                              json.dumps({"len": 3}), json.dumps({"file": "files/1.pkl", "id": 1}),
                              json.dumps({"file": "files/missing.pkl"})]) + "\n")
  assert main(["import-lumos", str(index), str(tmp_path / "out")]) == 0
  out, err = capsys.readouterr()
  assert re.search(r"skipped \S+-record\.jsonl:2: bad index line: not JSON", err)
  assert re.search(r"skipped \S+-record\.jsonl:3: bad index line: expected an object", err)
  assert "skipped files/missing.pkl: missing file" in err
  assert "imported 2 records" in out
  assert "skipped 3 bad record(s) (2 bad index line, 1 missing file)" in out
  assert main(["import-lumos", str(index), str(tmp_path / "strict"), "--strict"]) == 1
  assert "-record.jsonl:2: bad index line" in capsys.readouterr().err
  assert not (tmp_path / "strict").exists() or not list((tmp_path / "strict").iterdir())


def test_import_refuses_a_malformed_converted_sequence(tmp_path):
  root = _fake_root(tmp_path)
  sample = pickle.loads((root / "files" / "0.pkl").read_bytes())
  sample["token"][1] = LUMOS.number(5)  # an integer token inside the prompt text
  with pytest.raises(official.SampleError, match="malformed sequence at token 1") as e:
    official.convert(sample, num2tokens=official.load_num2tokens(root))
  assert e.value.kind == "malformed sequence"
