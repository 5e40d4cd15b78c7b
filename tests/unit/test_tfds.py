"""TFDS datasets (lumos_jax.data.tfds) and the data command line's `tfds` command: the synthetic
builder equals the record directory the project writes, the records builder round-trips a record
directory, both read TF-free into the pipeline, and errors name what is wrong."""
import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lumos_jax import config
from lumos_jax.data import pipeline, records, tfds as tfds_data
from lumos_jax.data.__main__ import main
from lumos_jax.synthetic import dataset as synthetic
from helpers import REPO, VOCAB, random_sample

SMALL = ["--count=6", "--eval_count=3", "--seed=5"]  # lumos_synthetic/small: 6 train, 3 eval


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """(TFDS data_dir holding lumos_synthetic/small, {split: record directory of the same videos})."""
  root = tmp_path_factory.mktemp("tfds_small")
  assert main(["tfds", "lumos_synthetic/small", str(root / "tfds"), *SMALL]) == 0
  synthetic.write(root / "train", 6, 5, log=None)
  synthetic.write(root / "eval", 3, 6, log=None)  # the eval split is dataset seed + 1
  return root / "tfds", {"train": root / "train", "eval": root / "eval"}


def _all(source) -> list:
  return [source[i] for i in range(len(source))]


def test_synthetic_tfds_equals_the_record_directory(small):
  data_dir, dirs = small
  splits = tfds.data_source("lumos_synthetic/small", data_dir=data_dir)
  assert set(splits) == {"train", "eval"}
  for split, directory in dirs.items():
    expected = _all(records.RecordSource(directory))
    raw = _all(splits[split])
    assert [r["id"].decode() for r in raw] == [r.id for r in expected]  # same order by id
    for got, want in zip(raw, expected):
      assert got["tokens"].dtype == np.int32
      np.testing.assert_array_equal(got["tokens"], want.tokens)
    source = tfds_data.TfdsSource("lumos_synthetic/small", split, data_dir)
    assert _all(source) == expected  # every field, as records.Record
    assert source.vocab == records.RecordSource(directory).vocab == VOCAB
  info = tfds.builder("lumos_synthetic/small", data_dir=data_dir).info
  assert info.metadata["generator"] == {"train_count": 6, "eval_count": 3, "seed": 5, "frames": 8,
                                        "frame_px": 32, "patch_px": 4}
  assert info.version == "1.0.0" and "1.0.0" in tfds_data.LumosSynthetic.RELEASE_NOTES


@pytest.mark.parametrize("setting, flag, value", [
    ("distractors", "1", 1), ("cells_per_patch", "1", 1), ("sizes", "5", (5,)),
    ("speeds", "1", (1,))])
def test_synthetic_tfds_with_a_later_setting_equals_the_record_directory(tmp_path, setting, flag,
                                                                          value):
  """--distractors builds the harder variant, --cells_per_patch=1 one-colour codes, --sizes and
  --speeds other motions (each recorded in the metadata); at their defaults the metadata keeps no
  such key (above), so datasets built before the settings existed still match."""
  args = ["--count=3", "--eval_count=0", "--seed=5", f"--{setting}={flag}"]
  assert main(["tfds", "lumos_synthetic/variant", str(tmp_path / "tfds"), *args]) == 0
  geometry = synthetic.SyntheticConfig(**{setting: value})
  synthetic.write(tmp_path / "train", 3, 5, geometry, log=None)
  got = _all(tfds_data.TfdsSource("lumos_synthetic/variant", "train", tmp_path / "tfds"))
  assert got == _all(records.RecordSource(tmp_path / "train"))
  assert got != [synthetic.to_record(synthetic.generate(5, i), i, synthetic.PatchTokenizer(
      synthetic.SyntheticConfig()), VOCAB) for i in range(3)]  # the setting made other videos
  info = tfds.builder("lumos_synthetic/variant", data_dir=tmp_path / "tfds").info
  assert info.metadata["generator"][setting] == (list(value) if isinstance(value, tuple) else value)


def test_tfds_source_feeds_the_pipeline_like_the_record_directory(small):
  data_dir, dirs = small
  source = tfds_data.TfdsSource("lumos_synthetic/small", "train", data_dir)
  source = pickle.loads(pickle.dumps(source))  # what grain worker processes receive
  cfg = pipeline.PipelineConfig(seq_len=200, batch_size=2, seed=3, max_frames=2,
                                strides=(1, 4, 4))
  batches = [iter(pipeline.build([s], cfg, VOCAB, process_index=0, process_count=1))
             for s in (source, records.RecordSource(dirs["train"]))]
  for _ in range(4):  # past one epoch of 6 records
    got, want = (next(b) for b in batches)
    for key in pipeline.FIELDS:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_records_builder_round_trips_a_record_directory(tmp_path):
  assert ({f.name for f in dataclasses.fields(records.Record)}
          == {"tokens", *tfds_data.TEXT_FIELDS, *tfds_data.INT_FIELDS})  # every field has a feature
  rng = np.random.default_rng(0)
  originals = {split: [records.Record(tokens=random_sample(rng), id=i if i % 2 else f"s-{i}",
                                      caption=f"caption {i} é", fps=i, duration=1, frames=i,
                                      latent_h=2, latent_w=3, source=f"{split}.pkl")
                       for i in range(n)] for split, n in (("train", 5), ("eval", 2))}
  for split, recs in originals.items():
    records.write_records(tmp_path / "in" / split, recs, shard_size=2, vocab=VOCAB)
  data_dir = tmp_path / "tfds"
  # a record directory is split train; a directory of them one split per subdirectory
  assert main(["tfds", "lumos_records", str(data_dir),
               f"--records={tmp_path / 'in' / 'train'}"]) == 0
  builder, built = tfds_data.prepare("lumos_records/both", data_dir, records_dir=tmp_path / "in")
  assert built and set(builder.info.splits) == {"train", "eval"}
  for name, splits in (("lumos_records", ("train",)), ("lumos_records/both", ("train", "eval"))):
    for split in splits:
      source = tfds_data.TfdsSource(name, split, data_dir)
      assert source.vocab == VOCAB
      for got, want in zip(_all(source), originals[split], strict=True):
        assert got.id == str(want.id)  # TFDS stores ids as text
        got.id = want.id
        assert got == want
  assert set(tfds.data_source("lumos_records", data_dir=data_dir)) == {"train"}
  # reused when prepared: nothing to copy
  assert tfds_data.prepare("lumos_records/both", data_dir)[1] is False


def test_tensorflow_is_never_imported(tmp_path):
  """Build and read in a fresh process where a fake `tensorflow` package is importable: importing
  it (not merely looking it up, as etils does) would leave a marker file."""
  fake = tmp_path / "fake" / "tensorflow"
  fake.mkdir(parents=True)
  marker = tmp_path / "imported"
  (fake / "__init__.py").write_text(
      "import pathlib, traceback\n"
      f"pathlib.Path({str(marker)!r}).write_text(''.join(traceback.format_stack()))\n"
      "raise ImportError('tensorflow must not be imported')\n")
  script = (
      "import sys\n"
      "import tensorflow_datasets as tfds\n"
      "from lumos_jax.data import tfds as tfds_data\n"
      f"d = {str(tmp_path / 'tfds')!r}\n"
      "tfds_data.prepare('lumos_synthetic/x', d, train_count=3, eval_count=2)\n"
      "assert tfds.data_source('lumos_synthetic/x', split='train', data_dir=d)[2]['tokens'].size\n"
      "assert len(tfds_data.TfdsSource('lumos_synthetic/x', 'eval', d)[1].tokens)\n"
      "print('tensorflow' in sys.modules)\n")
  env = dict(os.environ, PYTHONPATH=f"{REPO}:{tmp_path / 'fake'}")
  run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  assert not marker.exists(), marker.read_text()
  assert run.stdout.strip().splitlines()[-1] == "False"


def test_tfds_command_errors(small, tmp_path, capsys):
  data_dir, _ = small
  usage = [
      (["tfds", "lumos_synthetic/tiny", str(tmp_path), "--count=3"], "predefined config"),
      (["tfds", "lumos_records", str(tmp_path), "--seed=1"], "only apply to lumos_synthetic"),
      (["tfds", "lumos_synthetic", str(tmp_path), "--records=x"], "--records is for"),
      (["tfds", "mnist", str(tmp_path)], "expected lumos_synthetic or lumos_records"),
      (["tfds", "lumos_synthetic/odd", str(tmp_path), "--patch_px=3"],
       "patch_px=3 must be a multiple of cells_per_patch=2"),
      (["tfds", "lumos_synthetic"], "tfds takes NAME DATA_DIR"),
      (["inspect", str(tmp_path), "--records=x"], "inspect takes no --records"),
      (["tfds", "lumos_synthetic", str(tmp_path), "--count=0"], "--count=0"),
      (["tfds", "lumos_synthetic/x", str(tmp_path), "--speeds=2,fast"],
       "--speeds=2,fast: expected integers separated by commas"),
      (["tfds", "lumos_synthetic/x", str(tmp_path), "--sizes=6"], "sizes (6,) must be odd"),
      (["tfds", "lumos_synthetic", str(tmp_path), "--unknown=1"], "unknown"),
      (["nope"], "unknown command 'nope'"),
  ]
  for argv, message in usage:
    assert main(argv) == 2, argv
    assert message in capsys.readouterr().err, argv
  failures = [
      (["tfds", "lumos_records", str(tmp_path / "t")], "give the record directory"),
      (["tfds", "lumos_records", str(tmp_path / "t"), f"--records={tmp_path}"],
       "expected a record directory"),
      (["tfds", "lumos_synthetic/small", str(data_dir), "--count=7"], "already holds"),
  ]
  for argv, message in failures:
    assert main(argv) == 1, argv
    assert message in capsys.readouterr().err, argv
  assert main(["tfds", "lumos_synthetic/small", str(data_dir), *SMALL]) == 0
  assert "already prepared" in capsys.readouterr().out


def test_help_lists_every_command_and_its_flags(capsys):
  assert main(["--help"]) == 0
  text = capsys.readouterr().out
  for item in ("import-lumos INDEX... OUT", "synthetic OUT", "inspect DIR", "tfds NAME DATA_DIR",
               "--shard_size=K", "--[no]strict", "--eval_count=M", "--records=DIR", "--[no]json"):
    assert item in text, item
  assert main(["tfds", "--help"]) == 0
  text = capsys.readouterr().out
  assert "--records=DIR" in text and "--json" not in text and "--root" not in text


def _data(**changes):
  d = config.load("tiny").data
  d.update(kind="tfds", **changes)
  return d


def test_training_config_errors_name_the_field(small):
  data_dir = str(small[0])
  train, eval_source = tfds_data.sources_from_config(
      _data(tfds_name="lumos_synthetic/small", tfds_data_dir=data_dir))
  assert (len(train), len(eval_source)) == (6, 3) and train.vocab == VOCAB
  _, none = tfds_data.sources_from_config(
      _data(tfds_name="lumos_synthetic/small", tfds_data_dir=data_dir, tfds_eval_split=""))
  assert none is None
  cases = [
      (dict(tfds_name=""), "data.tfds_name is empty"),
      (dict(tfds_name="lumos_synthetic/missing", tfds_data_dir=data_dir), "data.tfds_name="),
      (dict(tfds_name="lumos_synthetic/tiny", tfds_data_dir=data_dir), "is not prepared"),
      (dict(tfds_name="lumos_synthetic/small", tfds_data_dir=data_dir, tfds_eval_split="test"),
       "data.tfds_eval_split='test'"),
      (dict(tfds_name="lumos_synthetic/small", tfds_data_dir=data_dir, tfds_train_split="x"),
       "data.tfds_train_split='x'"),
  ]
  for changes, message in cases:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
      tfds_data.sources_from_config(_data(**changes))


def test_metadata_vocab_is_required(tmp_path):
  info = tfds.builder("lumos_synthetic/tiny", data_dir=tmp_path).info
  assert tfds_data.vocab(info) == VOCAB  # from the builder's metadata, before any build
  info.metadata.pop("vocab_config")
  with pytest.raises(ValueError, match="names no token vocabulary"):
    tfds_data.vocab(info)
  assert json.dumps(tfds_data.vocab_metadata(VOCAB))  # JSON-able, as metadata.json needs
