"""The pure train step: a non-finite batch skips the update; accumulation equals one batch."""
import jax
import numpy as np
import pytest

from helpers import VOCAB, random_packed_batch
from lumos_jax import config, model as model_lib
from lumos_jax.train import optim, state as state_lib, step as step_lib


def _step_setup(accum=1):
  cfg = config.load("tiny")
  model_cfg = config.model_config(cfg)
  tx = optim.make(cfg.optim, cfg.steps)
  graphdef, params = model_lib.init_model(model_cfg, 0)
  state = state_lib.init_state(params, tx, 0)
  fn = jax.jit(lambda s, b: step_lib.train_step(s, b, tx=tx, accum_steps=accum, graphdef=graphdef,
                                                 model_cfg=model_cfg, loss_chunk=64))
  return state, fn, _masked_batch(4, 96)


def _masked_batch(batch_size: int, length: int) -> dict:
  """A numpy train batch of random packed rows, ~80% of their code slots masked."""
  ids, lay = random_packed_batch(np.random.default_rng(0), batch_size, length)
  weights = (lay["code"] & (np.random.default_rng(1).random(ids.shape) < 0.8)).astype(np.float32)
  return {"inputs": np.where(weights > 0, VOCAB.mask, ids), "targets": ids, "weights": weights,
          **{k: lay[k] for k in ("positions", "index", "k_start", "k_end", "frame", "valid")}}


def test_non_finite_batch_skips_the_update():
  state, fn, batch = _step_setup()
  params_before = jax.tree.map(np.asarray, state["params"])
  bad = dict(batch, weights=np.where(batch["weights"] > 0, np.nan, 0).astype(np.float32))
  state, metrics = fn(state, bad)
  assert not np.isfinite(metrics.compute()["loss"])
  assert int(state["skipped"]) == 1 and int(state["bad_streak"]) == 1
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params_before)):
    np.testing.assert_array_equal(a, b)
  state, metrics = fn(state, batch)  # the run goes on
  assert np.isfinite(metrics.compute()["loss"])
  assert int(state["skipped"]) == 1 and int(state["bad_streak"]) == 0
  assert int(state["step"]) == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_gradient_accumulation_matches_one_batch():
  state1, fn1, batch = _step_setup(accum=1)
  state2, fn2, _ = _step_setup(accum=2)
  out1, m1 = fn1(state1, batch)
  out2, m2 = fn2(state2, batch)
  np.testing.assert_allclose(m2.compute()["loss"], m1.compute()["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out1["params"]), jax.tree.leaves(out2["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_auto_remat_takes_the_fastest_policy_that_fits(monkeypatch):
  """remat="auto" walks REMAT_POLICIES (fastest first) and keeps the first whose compiled step
  fits memory_budget_gib; none fitting is an error that lists what each needs; functions_for
  hands the trainer the executable it compiled for the choice (`_runs_as_jitted`)."""
  import re

  import pytest

  from lumos_jax import sharding
  cfg = config.load("tiny")
  cfg.model.remat = "auto"
  model_cfg = config.model_config(cfg)
  mesh = sharding.make_mesh((2, 2, 2))
  two = {k: model_lib.REMAT_POLICIES[k] for k in ("none", "full")}
  monkeypatch.setattr(model_lib, "REMAT_POLICIES", two)
  cfg.memory_budget_gib = 1e-9
  with pytest.raises(ValueError, match="no policy fits memory_budget_gib") as err:
    step_lib.choose_remat(cfg, mesh, model_cfg)
  need = dict(re.findall(r"(\w+) ([\d.]+) GiB", str(err.value)))
  assert float(need["full"]) < float(need["none"]), need  # rematerialising saves memory
  cfg.memory_budget_gib = (float(need["full"]) + float(need["none"])) / 2
  assert step_lib.choose_remat(cfg, mesh, model_cfg).remat == "full"
  cfg.memory_budget_gib = 100.0
  chosen, fns = step_lib.functions_for(cfg, mesh, model_cfg)
  assert chosen.remat == "none"
  _runs_as_jitted(cfg, mesh, chosen, fns)
  assert step_lib.choose_remat(cfg, mesh, config.model_config(config.load("tiny"))).remat == "full"
  _out_of_memory_while_compiling(monkeypatch, "none")
  assert step_lib.choose_remat(cfg, mesh, model_cfg).remat == "full"


def _out_of_memory_while_compiling(monkeypatch, policy: str):
  """Make `policy`'s step fail to compile as XLA's GPU autotuner does when it runs out of memory
  (seen on an H200): choose_remat must then take the next policy, not raise."""
  import dataclasses

  class OutOfMemoryStep:
    def lower(self, *args):
      return self

    def compile(self):
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                       "allocate 71.96GiB with allocator GPU_0_bfc")

  build = step_lib.build_functions

  def build_or_fail(cfg, mesh, model_cfg):
    fns = build(cfg, mesh, model_cfg)
    return dataclasses.replace(fns, step=OutOfMemoryStep()) if model_cfg.remat == policy else fns
  monkeypatch.setattr(step_lib, "build_functions", build_or_fail)


def _runs_as_jitted(cfg, mesh, model_cfg, fns):
  """fns.step (from functions_for under remat="auto") is the AOT executable compiled for the
  memory analysis, not a jit that would compile the policy again, and it computes what the
  jitted step of the same policy computes on a trainer-style global batch."""
  from lumos_jax.train.loop import global_batch
  assert isinstance(fns.step, jax.stages.Compiled)
  jitted = step_lib.build_functions(cfg, mesh, model_cfg)
  with jax.set_mesh(mesh):
    batch = global_batch(_masked_batch(cfg.data.batch_size, cfg.data.seq_len), fns.batch_sh)
    out_aot, m_aot = fns.step(fns.init(), batch)
    out_jit, m_jit = jitted.step(jitted.init(), batch)
  assert m_aot.compute()["loss"] == m_jit.compute()["loss"]
  for a, b in zip(jax.tree.leaves(out_aot["params"]), jax.tree.leaves(out_jit["params"])):
    np.testing.assert_array_equal(a, b)


def test_device_memory_leaves_headroom_on_accelerators():
  """An accelerator's step may claim ACCELERATOR_SHARE of its allocator limit (the autotuner
  needs the rest); a device that reports no limit (CPU) gets a share of the host's RAM."""
  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  limit = 125.82 * step_lib.GiB
  assert step_lib.device_memory_gib(Device({"bytes_limit": limit})) == pytest.approx(
      step_lib.ACCELERATOR_SHARE * 125.82)
  assert step_lib.ACCELERATOR_SHARE * 125.82 < 110.1  # the H200 step that failed to compile
  assert 0 < step_lib.device_memory_gib(Device(None)) < 1e6
