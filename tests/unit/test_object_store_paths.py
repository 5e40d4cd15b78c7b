"""Workdirs on object stores: a gs://bucket/run workdir keeps its scheme through every path we
build from it (pathlib would make it gs:/bucket/run). No network: the gs:// backend of etils.epath
is replaced by a local directory that records every path it is asked for."""
import json
import pathlib

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from lumos_jax import checkpoint, config
from lumos_jax.synthetic import evaluate
from lumos_jax.train import metrics

RUN = "gs://bucket/run"


def test_path_arithmetic_keeps_the_scheme():
  assert str(checkpoint.directory(RUN)) == f"{RUN}/checkpoints"
  assert str(checkpoint.directory(RUN) / "20" / checkpoint.PARAMS) == f"{RUN}/checkpoints/20/params"
  assert str(config.run_config_path(RUN)) == f"{RUN}/config.json"
  jsonl, tb = metrics.paths(RUN)
  assert (str(jsonl), tb) == (f"{RUN}/metrics.jsonl", f"{RUN}/tb")
  assert str(config.run_config_path("/tmp/run/")) == "/tmp/run/config.json"  # local unchanged


@pytest.fixture
def fake_gcs(tmp_path):
  """gs://... served from tmp_path/gcs; yields the list of gs:// paths the backend was given."""
  seen = []

  def local(path):
    path = str(path)
    if path.startswith("gs://"):
      seen.append(path)
      return str(tmp_path / "gcs" / path.removeprefix("gs://"))
    return path

  redirect = lambda original, path, *args, **kwargs: original(local(path), *args, **kwargs)
  fns = ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rmtree", "stat")
  with epath_testing.mock_epath(**{name: redirect for name in fns}):
    yield seen


def test_run_config_checkpoints_and_metrics_through_the_backend(fake_gcs):
  cfg = config.load("tiny")
  epath.Path(RUN).mkdir(parents=True, exist_ok=True)
  config.save_run(cfg, RUN)
  assert config.load_run(RUN).to_dict() == json.loads(cfg.to_json_best_effort())
  for step in (10, 20):  # a finished step holds its params item; an unfinished one does not
    (checkpoint.directory(RUN) / str(step) / checkpoint.PARAMS).mkdir(parents=True)
  (checkpoint.directory(RUN) / "30.orbax-checkpoint-tmp").mkdir()
  assert checkpoint.steps(RUN) == [10, 20]
  jsonl, _ = metrics.paths(RUN)
  for first in (1, 3):  # a resumed run keeps the lines written before it (no append on GCS)
    lines = metrics._Lines(jsonl)
    lines.write(f'{{"step": {first}}}\n')
    lines.write(f'{{"step": {first + 1}}}\n')
    lines.close()
  assert jsonl.read_text().splitlines() == [f'{{"step": {s}}}' for s in (1, 2, 3, 4)]
  assert fake_gcs and all(p.startswith(f"{RUN}/") or p == RUN for p in fake_gcs)


def test_evaluate_stages_locally_and_copies_up(fake_gcs):
  dest = epath.Path(RUN) / "eval"
  staged = evaluate._staging(dest)
  assert isinstance(staged, pathlib.Path) and "://" not in str(staged)
  (staged / "videos").mkdir(parents=True)
  np.save(staged / "videos" / "000.npy", np.arange(3))
  (staged / "scores.json").write_text("{}")
  evaluate._publish(staged, dest)
  assert not staged.exists()
  assert (dest / "scores.json").read_text() == "{}"
  with (dest / "videos" / "000.npy").open("rb") as f:
    np.testing.assert_array_equal(np.load(f), np.arange(3))
  assert evaluate._staging(epath.Path("/tmp/somewhere")) == pathlib.Path("/tmp/somewhere")


def test_synthetic_data_needs_a_local_workdir():
  from lumos_jax.train import loop
  cfg = config.load("tiny")
  with pytest.raises(ValueError, match=r"data.kind='synthetic'.*not gs://bucket/run"):
    loop.data_sources(cfg, epath.Path(RUN), config.vocab(cfg))


def test_params_restore_reads_the_gs_path(fake_gcs, monkeypatch):
  """restore_params hands orbax gs://bucket/run/checkpoints/STEP/params (orbax itself writes
  object stores through tensorstore: not exercised here)."""
  (checkpoint.directory(RUN) / "20" / checkpoint.PARAMS).mkdir(parents=True)
  asked = []

  class FakeReader:
    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def restore(self, path, abstract):
      asked.append(str(path))
      return abstract

  monkeypatch.setattr(checkpoint.ocp, "StandardCheckpointer", FakeReader)
  assert checkpoint.restore_params(RUN, None, "abstract") == "abstract"
  assert asked == [f"{RUN}/checkpoints/20/params"]
