"""Checkpoints: the trainer's items, the params-only restore inference uses, and its errors."""
import jax
import numpy as np
import pytest

from helpers import VOCAB, pipeline_config, random_records
from lumos_jax import checkpoint, config, model as model_lib, sharding
from lumos_jax.data import pipeline
from lumos_jax.train import checkpointer, optim, state as state_lib


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with checkpoints at steps 2 and 4 of a tiny model (params differ between them)."""
  workdir = tmp_path_factory.mktemp("ckpt")
  cfg = config.load("tiny")
  tx = optim.make(cfg.optim, cfg.steps)
  _, params = model_lib.init_model(config.model_config(cfg), 0)
  data = iter(pipeline.build([random_records()], pipeline_config(), VOCAB, process_index=0,
                             process_count=1))
  saver = checkpointer.Checkpointer(checkpoint.directory(workdir))
  saved = {}
  for step in (2, 4):
    params = jax.tree.map(lambda x, s=step: x + s, params)
    saved[step] = jax.tree.map(np.asarray, params)
    saver.save(step, state_lib.init_state(params, tx, 0), data, force=True)
  saver.close()
  return workdir, saved


def _abstract():
  _, abstract = model_lib.abstract_model(config.model_config(config.load("tiny")))
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  shardings = sharding.named_shardings(sharding.param_specs(abstract, mesh), mesh)
  return checkpoint.abstract_like(abstract, shardings)


def test_params_restore_alone_latest_or_chosen_step(workdir):
  path, saved = workdir
  assert checkpoint.steps(path) == [2, 4]
  for step, want in ((None, saved[4]), (2, saved[2])):
    got = checkpoint.restore_params(path, step, _abstract())
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), b)


def test_missing_step_and_old_layout_are_named(workdir, tmp_path):
  path, _ = workdir
  with pytest.raises(FileNotFoundError, match=r"no checkpoint 7 .*finished steps: \[2, 4\]"):
    checkpoint.restore_params(path, 7, _abstract())
  with pytest.raises(FileNotFoundError, match="finished steps: none"):
    checkpoint.restore_params(tmp_path, None, _abstract())
  (checkpoint.directory(tmp_path) / "5" / checkpoint.LEGACY_STATE).mkdir(parents=True)
  with pytest.raises(ValueError, match="written by lumos_jax 0.1"):
    checkpoint.restore_params(tmp_path, None, _abstract())
