"""config.init_from: a run starts from another run's parameters with a fresh optimizer (step 0),
and a shape mismatch names the parameter and both shapes before any step."""
from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from lumos_jax import checkpoint, config, model, sharding
from lumos_jax.train import init_from
from lumos_jax.train.step import build_functions


def _source_run(workdir, **model_overrides) -> dict:
  """A run whose step-5 checkpoint holds the tiny model's parameters (seed 11)."""
  cfg = config.load("tiny")
  cfg.model.update(model_overrides)
  _, params = model.init_model(config.model_config(cfg), seed=11)
  config.save_run(cfg, workdir)
  with ocp.StandardCheckpointer() as writer:
    writer.save((checkpoint.directory(workdir) / "5" / checkpoint.PARAMS).absolute(), params)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(params))


def _fresh_state(init_path):
  cfg = config.load("tiny")
  cfg.init_from = str(init_path)
  mesh_shape, model_cfg, _ = config.validate(cfg, jax.device_count())
  mesh = sharding.make_mesh(mesh_shape)
  fns = build_functions(cfg, mesh, model_cfg)  # outside the mesh context, as the loop does
  with jax.set_mesh(mesh):
    return init_from.fresh_state(cfg, fns)


def test_init_from_starts_at_step_0_with_the_source_parameters(tmp_path):
  source = _source_run(tmp_path)
  state = _fresh_state(tmp_path)
  assert int(state["step"]) == 0
  got = jax.tree.map(np.asarray, nnx.to_pure_dict(state["params"]))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, source, got)))
  moments = [np.asarray(x) for x in jax.tree.leaves(state["opt"]) if np.ndim(x) > 1]
  assert moments and all(not m.any() for m in moments)  # a fresh optimizer


def test_init_from_shape_mismatch_names_the_parameter(tmp_path):
  _source_run(tmp_path, d_model=32)
  with pytest.raises(ValueError, match=r"parameter embed: checkpoint shape \(840, 32\), this "
                                       r"run's model wants \(840, 64\)"):
    _fresh_state(tmp_path)


def test_init_from_without_checkpoint_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="init_from"):
    _fresh_state(tmp_path)
