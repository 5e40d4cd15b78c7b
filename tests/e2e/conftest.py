"""End-to-end tests: real `python -m lumos_jax...` runs in subprocesses (marked `e2e`).

They share one trained run, `tiny_run`: configs/tiny.py for 40 steps with a checkpoint every 10,
trained once per test process (pytest.ini runs two). Tests read it and copy it before changing
anything.

Every process they start shares the session's persistent JAX compilation cache (tests/conftest.py):
most commands compile the same tiny config's functions, which took about half of each run's time.
"""
import pathlib
import subprocess

import pytest

from helpers import REPO
from runs import TINY_STEPS, losses, train_command


def pytest_collection_modifyitems(items):
  here = pathlib.Path(__file__).parent
  for item in items:
    if here in item.path.parents:
      item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(workdir, {step: loss}) of the shared 40-step tiny run (it learns: checked here)."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  cmd, env = train_command(workdir)
  subprocess.run(cmd, env=env, cwd=REPO, check=True, timeout=600, capture_output=True)
  run_losses = losses(workdir)
  assert sorted(run_losses) == list(range(1, TINY_STEPS + 1))
  assert run_losses[TINY_STEPS] < run_losses[1] - 0.5
  return workdir, run_losses
