"""Helpers of the end-to-end tests: launching tiny training runs and reading their losses."""
import json
import os
import pathlib
import sys
import time

import numpy as np

TINY_STEPS, TINY_CHECKPOINT_EVERY = 40, 10


def train_command(workdir, *overrides, devices: int = 8):
  """(argv, env) of a tiny training run in `workdir` on `devices` forced CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "lumos_jax.train", "--config=configs/tiny.py",
         f"--workdir={workdir}", f"--config.steps={TINY_STEPS}",
         f"--config.checkpoint_every={TINY_CHECKPOINT_EVERY}", *overrides]
  return cmd, env


def losses(workdir, *, running: bool = False) -> dict:
  """step -> loss from metrics.jsonl; a step logged again after a restart overrides the first.

  `running`: the writer may be mid-line, so an unfinished last line is ignored.
  """
  text = (pathlib.Path(workdir) / "metrics.jsonl").read_text()
  lines = text.splitlines()
  if running and not text.endswith("\n"):
    lines = lines[:-1]
  out = {}
  for line in lines:
    row = json.loads(line)
    if "loss" in row:
      out[row["step"]] = row["loss"]
  return out


def kill_seed() -> int:
  """The seed of a kill point: LUMOS_KILL_SEED, else new each session (failures name it, and
  LUMOS_KILL_SEED=<seed> replays one)."""
  return int(os.environ.get("LUMOS_KILL_SEED", np.random.SeedSequence().entropy % 2**31))


def wait_for_step(workdir, proc, step: int, timeout: float) -> None:
  """Returns once the run in `workdir` has logged `step`, `proc` ended, or `timeout` s passed."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if (pathlib.Path(workdir) / "metrics.jsonl").exists() and max(
        losses(workdir, running=True), default=0) >= step:
      return
    time.sleep(0.02)
