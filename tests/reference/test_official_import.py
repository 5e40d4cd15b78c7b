"""Importing the official Lumos-1 samples: placeholders, cuts, header rewrite, bad/hostile files.

Expected values come from LUMOS_REFERENCE.md sections 2.2 and 8 (written here as literals), not
from the importer: 22 latent frames of 48x84 at 12 fps / 7 s for the videos, 1 frame of 52x72 for
the images, digit d -> token 16399 + d, header [9004, 8804 + duration, 8804 + fps].
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lumos_jax import tokens
from lumos_jax.data import official, official_index, safe_pickle
from lumos_jax.data.__main__ import main
from lumos_jax.data.records import RecordSource

VIDEO_INDEX = "pre_tokenize/data/test_video/merge-record.json"
IMAGE_INDEX = "pre_tokenize/data/test_image/merge-record.json"
VIDEO_YAML = "configs/data/pre-tokenized-vid-onejson-Cosmos-DV4x8x8.yaml"
IMAGE_YAML = "configs/data/pre-tokenized-img-onejson-Cosmos-DV4x8x8.yaml"
VIDEO_PART0 = "pre_tokenize/data/test_video/1-in-1/0-of-8-record.jsonl"  # 3 videos
FRAMES_AT, FPS_AT = 21, 25  # placeholder positions in every stored prompt (reference section 8)


def digits(n):
  return [16399 + int(d) for d in str(n)]


def header(ids):
  """[VIDEO_START, duration token, fps token]."""
  v = int(np.flatnonzero(ids == 9004)[0])
  return ids[v:v + 3].tolist()


def original(root, source):
  return np.asarray(safe_pickle.load(root / source)["token"])


@pytest.fixture(scope="module")
def imported(official_samples, tmp_path_factory):
  """The 12 videos and 12 images imported whole, through the two data yamls."""
  out = tmp_path_factory.mktemp("official") / "all"
  result = official.import_lumos([official_samples / VIDEO_YAML, official_samples / IMAGE_YAML],
                                 out, root=official_samples)
  assert result.written == 24 and result.skipped == []
  return RecordSource(out)


def test_index_formats_list_the_same_files(official_samples):
  root = official_samples
  merged = official_index.read_index(root / VIDEO_INDEX, root)
  from_yaml = official_index.read_index(root / VIDEO_YAML, root)
  parts = [e for p in sorted((root / "pre_tokenize/data/test_video/1-in-1").glob("*-record.jsonl"))
           for e in official_index.read_index(p, root)]
  assert len(merged) == 12
  assert from_yaml == merged
  assert sorted(parts, key=lambda e: e.id) == sorted(merged, key=lambda e: e.id)
  assert official_index.find_root(root / VIDEO_YAML) == root.resolve()
  assert official_index.find_root(root / VIDEO_PART0) == root.resolve()


def test_whole_import_matches_the_reference(imported, official_samples):
  videos = [r for r in map(imported.__getitem__, range(len(imported))) if "test_video" in r.source]
  images = [r for r in map(imported.__getitem__, range(len(imported))) if "test_image" in r.source]
  assert len(videos) == 12 and len(images) == 12
  for r, (frames, hw, fps, duration) in [(v, (22, (48, 84), 12, 7)) for v in videos] + \
                                        [(i, (1, (52, 72), 1, 1)) for i in images]:
    layout = tokens.parse(r.tokens)
    assert int(layout.frame.max()) + 1 == frames == r.frames
    assert (int(layout.row.max()) + 1, int(layout.col.max())) == hw == (r.latent_h, r.latent_w)
    assert (r.fps, r.duration, r.caption) == (fps, duration, "")
    stored = original(official_samples, r.source)
    v = int(np.flatnonzero(stored == 9004)[0])
    # prompt: each placeholder replaced by digits; videos "84" and "12", images "1" and "1"
    rgb = digits(fps * duration)
    expect = np.concatenate([stored[:FRAMES_AT], rgb, stored[FRAMES_AT + 1:FPS_AT], digits(fps),
                             stored[FPS_AT + 1:v]])
    grown = len(rgb) + len(digits(fps)) - 2
    np.testing.assert_array_equal(r.tokens[:v + grown], expect)
    assert not np.isin(r.tokens[:v + grown], [65538, 65539, 65540]).any()
    # header [9004, 8804 + duration, 8804 + fps]; frames and closing tokens exactly as stored
    assert r.tokens[v + grown:v + grown + 3].tolist() == [9004, 8804 + duration, 8804 + fps]
    np.testing.assert_array_equal(r.tokens[v + grown + 3:], stored[v + 3:])
  assert videos[0].tokens[FRAMES_AT:FRAMES_AT + 2].tolist() == [16407, 16403]  # "84"
  assert videos[0].tokens[FPS_AT + 1:FPS_AT + 3].tolist() == [16400, 16401]  # "12"
  assert images[0].tokens[[FRAMES_AT, FPS_AT]].tolist() == [16400, 16400]  # "1", "1"
  assert header(videos[0].tokens) == [9004, 8811, 8816]
  assert header(images[0].tokens) == [9004, 8805, 8805]


def test_cut_to_seven_frames_rewrites_header_and_prompt(official_samples, tmp_path):
  result = official.import_lumos(official_samples / VIDEO_PART0, tmp_path / "cut", frames=7)
  assert result.written == 3
  for r in map(RecordSource(tmp_path / "cut").__getitem__, range(3)):
    t = r.tokens
    assert (r.frames, r.fps, r.duration) == (7, 12, 2)
    assert t[FRAMES_AT:FRAMES_AT + 2].tolist() == [16401, 16403]  # "24" RGB frames
    assert t[FPS_AT + 1:FPS_AT + 3].tolist() == [16400, 16401]  # "12" fps
    v = int(np.flatnonzero(t == 9004)[0])
    assert header(t) == [9004, 8806, 8816]
    layout = tokens.parse(t)
    assert int(layout.frame.max()) + 1 == 7
    assert t[-3:].tolist() == [8196, 9005, 8710]
    assert len(t) == v + 3 + 7 * (4 + 48 * 85) + 2
    stored = original(official_samples, r.source)
    sv = int(np.flatnonzero(stored == 9004)[0])
    np.testing.assert_array_equal(t[v + 3:-2], stored[sv + 3:sv + 3 + 7 * 4084])  # first 7 frames


def test_cut_timing_rule():
  assert official.cut_timing(7, 12) == (2, 24)
  assert official.cut_timing(22, 12) == (7, 84)
  assert official.latent_frames(24) == 7 and official.latent_frames(84) == 22  # official forward
  for n in (4, 10, 13):  # the inverse agrees with the official forward rule
    d, rgb = official.cut_timing(n, 12)
    assert official.latent_frames(12 * d) == n
  with pytest.raises(ValueError, match="not a whole number of seconds"):
    official.cut_timing(8, 12)
  with pytest.raises(ValueError, match="at least 2"):
    official.cut_timing(1, 12)


def test_impossible_cuts_are_reported_and_skipped(official_samples, tmp_path, capsys):
  assert main(["import-lumos", str(official_samples / VIDEO_PART0), str(tmp_path / "a"),
               "--frames=8"]) == 1
  captured = capsys.readouterr()
  assert captured.err.count("not a whole number of seconds") == 3
  assert "pre_tokenize/data/test_video/1-in-1/files/0.pkl" in captured.err
  assert "skipped 3 bad record(s)" in captured.out
  with pytest.raises(official.BadRecord, match="fewer than the 30 requested"):
    official.import_lumos(official_samples / VIDEO_PART0, tmp_path / "b", frames=30, strict=True)
  assert not list((tmp_path / "b").glob("*.array_record*"))
  # images are never cut: --frames 7 keeps them as one-frame samples with header 1 / 1
  images = official.import_lumos(official_samples / IMAGE_INDEX, tmp_path / "c", frames=7)
  assert images.written == 12
  r = RecordSource(tmp_path / "c")[0]
  assert (r.frames, r.fps, r.duration) == (1, 1, 1)


class _RunsCommand:
  """Pickles to a call of os.system (what a hostile .pkl does)."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


@pytest.fixture
def sandbox(official_samples, tmp_path):
  """A private ROOT with num2tokens.json, one good image sample and room for bad ones."""
  root = tmp_path / "root"
  (root / "data").mkdir(parents=True)
  (root / "files").mkdir()
  shutil.copy(official_samples / "data/num2tokens.json", root / "data")
  shutil.copy(official_samples / "pre_tokenize/data/test_image/1-in-1/files/0.pkl",
              root / "files/good.pkl")
  return root


def _write_index(root, names):
  lines = [json.dumps({"file": f"files/{n}"}) for n in names]
  (root / "index.jsonl").write_text("\n".join(lines) + "\n")
  return root / "index.jsonl"


def test_malicious_pickle_runs_nothing(sandbox, tmp_path, capsys):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(_RunsCommand(f"touch {marker}"))
  assert b"system" in payload  # plain pickle.loads(payload) would run the command
  (sandbox / "files/evil.pkl").write_bytes(payload)
  with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
    safe_pickle.load(sandbox / "files/evil.pkl")
  index = _write_index(sandbox, ["evil.pkl", "good.pkl"])
  assert main(["import-lumos", str(index), str(tmp_path / "out")]) == 0
  captured = capsys.readouterr()
  assert "skipped files/evil.pkl: refused/unreadable pickle" in captured.err
  assert "refusing to load global" in captured.err
  assert "skipped 1 bad record(s)" in captured.out
  assert len(RecordSource(tmp_path / "out")) == 1
  assert main(["import-lumos", str(index), str(tmp_path / "strict"), "--strict"]) == 1
  assert "files/evil.pkl" in capsys.readouterr().err
  assert not list((tmp_path / "strict").glob("*.array_record*"))
  assert not marker.exists()


def test_bad_records_are_reported_with_file_and_reason(sandbox, tmp_path, capsys):
  good = safe_pickle.load(sandbox / "files/good.pkl")
  n = len(good["token"])
  bad = {
      "strings.pkl": dict(good, token=[str(t) for t in good["token"]]),
      "short_labels.pkl": dict(good, label=good["label"][:-1]),
      "not_a_dict.pkl": [1, 2, 3],
      "labels_differ.pkl": dict(good, label=[-100] * n),
      # frame cut off before its IMAGE_END (then closed as if complete)
      "unterminated.pkl": dict(good, token=good["token"][:n - 500] + [9005, 8710],
                               label=good["label"][:n - 500] + [9005, 8710]),
  }
  for name, sample in bad.items():
    (sandbox / "files" / name).write_bytes(pickle.dumps(sample))
  index = _write_index(sandbox, ["missing.pkl", *bad, "good.pkl"])
  assert main(["import-lumos", str(index), str(tmp_path / "out")]) == 0
  out, err = capsys.readouterr()
  reasons = {
      "missing.pkl": "missing file",
      "strings.pkl": "'token' must be a non-empty list of ints, found str",
      "short_labels.pkl": "but 'label' has",
      "not_a_dict.pkl": "expected a dict",
      "labels_differ.pkl": "labels are not the official text-to-video form",
      "unterminated.pkl": "malformed sequence at token",
  }
  for name, reason in reasons.items():
    line = next((x for x in err.splitlines() if x.startswith(f"skipped files/{name}:")), "")
    assert reason in line, (name, err)
  assert "skipped 6 bad record(s)" in out
  assert "import-lumos: 7/7 records (6 skipped)" in err
  assert len(RecordSource(tmp_path / "out")) == 1


def test_cli_help_and_inspect_json(imported):
  for command in ("import-lumos", "inspect"):
    assert main([command, "--help"]) == 0
  run = subprocess.run([sys.executable, "-m", "lumos_jax.data", "inspect", str(imported.directory),
                        "--json"], capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  summary = json.loads(run.stdout)
  assert {"samples", "frames", "resolutions", "lengths", "bad"} <= summary.keys()
  assert summary["samples"] == 24 and summary["bad"] == 0
  assert summary["frames"] == {"22": 12, "1": 12}
  assert summary["resolutions"] == {"48x84": 12, "52x72": 12}
  assert summary["lengths"]["min"] >= 4037 and summary["lengths"]["max"] <= 90208 + 2
  assert sum(summary["lengths"]["histogram"].values()) == 24
