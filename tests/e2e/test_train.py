"""Training: config validation, the step (NaN skip, accumulation), resume after kill -9 / SIGTERM
(bitwise on CPU), 2 processes x 4 devices = 1 x 8, and restoring on another device count."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np

from lumos_jax import config, model as model_lib
from runs import kill_seed, losses as _losses, train_command, wait_for_step
from helpers import REPO

TINY = config.load("tiny")


# The kill point is drawn from this seed, new every session unless LUMOS_KILL_SEED is set: a
# failure names its seed, and LUMOS_KILL_SEED=<seed> replays it.
KILL_SEED = kill_seed()


def _run_cmd(workdir, *overrides, devices=8):
  return train_command(workdir, *overrides, devices=devices)


def _interrupt_and_resume(tmp_path, reference, send, *overrides, seed=KILL_SEED):
  workdir = tmp_path / "run"
  cmd, env = _run_cmd(workdir, *overrides)
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  target = int(np.random.default_rng(seed).integers(15, 30))  # a step after the step-10 save
  wait_for_step(workdir, proc, target, timeout=300)
  assert proc.poll() is None, f"the run finished before step {target} (LUMOS_KILL_SEED={seed})"
  send(proc)
  proc.wait(timeout=120)
  first = _losses(workdir)
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  subprocess.run(cmd, env=env, cwd=REPO, check=True, timeout=600, capture_output=True)
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 41))
  assert losses == reference, f"interrupted at step {target} (LUMOS_KILL_SEED={seed})"  # bitwise
  return first, saved, proc.returncode


def test_resume_after_kill_9_is_bitwise_identical(tmp_path, tiny_run):
  first, saved, rc = _interrupt_and_resume(tmp_path, tiny_run[1],
                                           lambda p: p.send_signal(signal.SIGKILL))
  assert rc == -signal.SIGKILL and max(first) < 40
  assert saved and max(saved) <= max(first)  # the restart resumed from a checkpoint


def test_sigterm_saves_and_exits_cleanly(tmp_path, tiny_run):
  first, saved, rc = _interrupt_and_resume(tmp_path, tiny_run[1],
                                           lambda p: p.send_signal(signal.SIGTERM))
  assert rc == 0
  assert max(saved) >= max(first)  # the step it stopped at (or a later one) was checkpointed


def test_kill_9_during_async_saves_keeps_a_restorable_checkpoint(tmp_path, tiny_run):
  """Saving every step keeps an asynchronous save in flight almost always: a kill -9 lands in one,
  and the restart must still find a complete earlier checkpoint and continue bitwise."""
  first, saved, rc = _interrupt_and_resume(tmp_path, tiny_run[1],
                                           lambda p: p.send_signal(signal.SIGKILL),
                                           "--config.checkpoint_every=1")
  assert rc == -signal.SIGKILL and saved and max(saved) <= max(first) < 40


def test_two_processes_match_one_and_restore_on_one_device(tmp_path, tiny_run):
  """2 processes x 4 CPU devices give the 1 x 8 losses; their checkpoint resumes on 1 device."""
  workdir = tmp_path / "multi"
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS="4",
             LOG_DIR=str(tmp_path / "logs"))
  subprocess.run(["bash", "launch/local.sh", "2", "--config=configs/tiny.py",
                  f"--workdir={workdir}", "--config.steps=20", "--config.checkpoint_every=10"],
                 env=env, cwd=REPO,
                 check=True, timeout=600, capture_output=True)
  reference = tiny_run[1]
  multi = _losses(workdir)
  assert sorted(multi) == list(range(1, 21))
  np.testing.assert_allclose([multi[s] for s in range(1, 21)], [reference[s] for s in range(1, 21)],
                             rtol=1e-5)
  cmd, env1 = _run_cmd(workdir, "--config.mesh=(1,1,1)", devices=1)
  cmd = [c if not c.startswith("--config.steps") else "--config.steps=24" for c in cmd]
  out = subprocess.run(cmd, env=env1, cwd=REPO, check=True, timeout=600, capture_output=True,
                       text=True)
  assert "resuming from step 20" in out.stdout
  resumed = _losses(workdir)
  np.testing.assert_allclose([resumed[s] for s in range(21, 25)],
                             [reference[s] for s in range(21, 25)], rtol=1e-5)


def test_outputs_eval_mfu_tensorboard_and_profile(tmp_path):
  workdir = tmp_path / "out"
  cmd, env = _run_cmd(workdir, "--config.steps=4", "--config.eval_every=2",
                      "--config.eval_batches=1", "--config.peak_flops_per_device=1e9",
                      "--config.profile_steps=(1, 3)", "--config.log_every=2")
  run = subprocess.run(cmd, env=env, cwd=REPO, check=True, timeout=600, capture_output=True,
                       text=True)
  n_params = sum(x.size for x in jax.tree.leaves(
      model_lib.abstract_model(config.model_config(TINY))[1]))
  assert "parameters:" in run.stdout and f"Total: {n_params:,}" in run.stdout  # clu's table
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in evals] == [0, 2, 4]
  assert {"eval_loss_frame0", "eval_loss_frame1"} <= set(evals[0])
  assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4]
  for r in train_rows:
    assert 0 < r["mfu"] and r["tokens_per_sec"] > 0 and r["skipped"] == 0
    assert {"loss", "grad_norm", "lr", "steps_per_sec", "param_norm"} <= set(r)
  assert list((workdir / "tb").glob("events.out.tfevents.*"))
  assert list((workdir / "profile").rglob("*.xplane.pb"))
