"""Stopping: a pipeline that yields nothing fails with its reasons, SIGTERM / SIGINT during set-up
and compilation exit at once, and a signal to one of two processes stops both at one saved step
from which a resumed run continues with the uninterrupted losses."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO
from runs import TINY_STEPS, kill_seed, losses as _losses, train_command, wait_for_step


def test_records_longer_than_seq_len_stop_with_the_reason(tmp_path):
  """Every tiny record is longer than 100 tokens: one error naming the count and the reason."""
  cmd, env = train_command(tmp_path / "run", "--config.data.seq_len=100")
  start = time.time()
  run = subprocess.run(cmd, env=env, cwd=REPO, timeout=120, capture_output=True, text=True)
  assert run.returncode != 0 and time.time() - start < 60
  out = run.stdout + run.stderr
  assert "64 of 64 consecutive records refused" in out and "64 longer than seq_len=100" in out
  assert "the longest is" in out
  assert len(out) < 50_000  # the per-record warnings are rate-limited
  assert out.count("skipping record") <= 10
  assert "Traceback" not in out and run.returncode == 1
  assert run.stderr.strip().splitlines()[-1].startswith("error: 64 of 64 consecutive records")


@pytest.mark.parametrize("signum,when", [(signal.SIGTERM, "process 0/1 on"),
                                         (signal.SIGINT, "parameters:")])
def test_a_signal_during_set_up_exits_at_once(tmp_path, signum, when):
  """Sent while the data are set up (SIGTERM) or right before the first compilation (SIGINT)."""
  workdir = tmp_path / "run"
  cmd, env = train_command(workdir)
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:  # a line logged once the handlers are installed
    lines.append(line)
    if when in line:
      break
  proc.send_signal(signum)
  sent = time.time()
  rest, _ = proc.communicate(timeout=60)
  assert time.time() - sent < 30, "".join(lines) + rest
  assert proc.returncode == 0, "".join(lines) + rest
  assert f"signal {int(signum)} before the first step" in rest
  assert not (workdir / "metrics.jsonl").exists() or not _losses(workdir)


def _children(pid: int) -> dict:
  """process_id -> pid of the training processes launch/local.sh started."""
  out = {}
  for proc in pathlib.Path("/proc").iterdir():
    if not proc.name.isdigit():
      continue
    try:
      stat = (proc / "stat").read_text()
      argv = (proc / "cmdline").read_bytes().decode().split("\0")
    except OSError:
      continue
    if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
      continue
    for arg in argv:
      if arg.startswith("--config.distributed.process_id="):
        out[int(arg.split("=")[1])] = int(proc.name)
  return out


def _launch(tmp_path, workdir, name):
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS="4",
             LOG_DIR=str(tmp_path / name))
  return subprocess.Popen(
      ["bash", "launch/local.sh", "2", "--config=configs/tiny.py", f"--workdir={workdir}",
       f"--config.steps={TINY_STEPS}", "--config.checkpoint_every=10"],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path, tiny_run):
  workdir = tmp_path / "multi"
  seed = kill_seed()
  target = int(np.random.default_rng(seed).integers(12, 30))
  launcher = _launch(tmp_path, workdir, "logs")
  wait_for_step(workdir, launcher, target, timeout=400)
  assert launcher.poll() is None, f"the run ended before step {target} (LUMOS_KILL_SEED={seed})"
  os.kill(_children(launcher.pid)[1], signal.SIGTERM)  # process 1 only
  sent = time.time()
  out, _ = launcher.communicate(timeout=120)
  logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))
  elapsed = time.time() - sent
  assert elapsed < 60 and launcher.returncode == 0, out + logs
  first = _losses(workdir)
  saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert target <= max(first) == saved < TINY_STEPS, (target, max(first), saved)
  print(f"signal after step {target}: both exited {elapsed:.1f} s later, saved step {saved}")
  data = workdir / "checkpoints" / str(saved) / "data"
  assert {p.name for p in data.glob("process_*.json")} == {"process_0-of-2.json",
                                                           "process_1-of-2.json"}
  resumed = _launch(tmp_path, workdir, "logs_resumed")
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out
  assert f"resuming from step {saved}" in out
  reference, losses = tiny_run[1], _losses(workdir)
  assert sorted(losses) == list(range(1, TINY_STEPS + 1))
  steps = range(1, TINY_STEPS + 1)
  np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps],
                             rtol=1e-5, err_msg=f"stopped at {saved} (LUMOS_KILL_SEED={seed})")


def test_sigterm_to_one_process_during_set_up_stops_both_after_the_first_step(tmp_path):
  """A lone exit during set-up would leave the other process in a collective: both stop (and
  save) after the first step instead."""
  workdir, logs = tmp_path / "multi", tmp_path / "logs"
  launcher = _launch(tmp_path, workdir, "logs")
  deadline = time.time() + 300
  log1 = logs / "process_1.log"
  while time.time() < deadline and not (log1.exists() and "process 1/2 on" in log1.read_text()):
    time.sleep(0.01)
  os.kill(_children(launcher.pid)[1], signal.SIGTERM)
  out, _ = launcher.communicate(timeout=120)
  assert launcher.returncode == 0, out
  assert "signal SIGTERM: saved a checkpoint at step 1" in log1.read_text()
  assert "a signal to another process: saved a checkpoint at step 1" in out
  assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
