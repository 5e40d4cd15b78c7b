"""Bad configs and sampling requests are refused by name before any work: exit code 2, one
`error:` line per problem on stderr, no traceback, nothing written."""
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO
from runs import train_command


def _run(cmd, env=None) -> tuple[subprocess.CompletedProcess, float]:
  start = time.monotonic()
  out = subprocess.run(cmd, env=env, cwd=REPO, check=False, timeout=300, capture_output=True,
                       text=True)
  return out, time.monotonic() - start


def _refused(out, *lines):
  """The run exited 2 and printed exactly `lines` (as `error: LINE`), without a traceback."""
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert errors == [f"error: {line}" for line in lines], out.stderr


@pytest.mark.parametrize("override,line", [
    ("--config.optim.lr=-3e-4", "config field optim.lr=-0.0003: expected a number > 0"),
    ("--config.optim.lrr=1", "--config.optim.lrr: the config has no key 'optim.lrr'; did you "
     "mean optim.lr or optim.min_lr or optim.clip?"),
    ("--config.steps=abc", "flag --config.steps=abc: invalid literal for int() with base 10: "
     "'abc'")])
def test_bad_training_config_exits_2_within_seconds(tmp_path, override, line):
  workdir = tmp_path / "run"
  cmd, env = train_command(workdir, override)
  out, seconds = _run(cmd, env)
  _refused(out, line)
  assert seconds < 60, f"refusing the config took {seconds:.0f} s"  # no data, no compilation
  assert not (workdir / "config.json").exists() and not (workdir / "data").exists()


def test_missing_config_file_exits_2(tmp_path):
  cmd, env = train_command(tmp_path / "run")
  cmd = [a.replace("configs/tiny.py", "configs/absent.py") for a in cmd]
  _refused(_run(cmd, env)[0], "--config=configs/absent.py: the config file does not load "
           "([Errno 2] No such file or directory: 'configs/absent.py')")


@pytest.mark.parametrize("args,line", [
    (["--history_mask=2"], "--history_mask=2.0: expected a fraction in [0, 1]"),
    (["--mode=i2v", "--image={float_codes}"], "--image={float_codes}: codes must be integers, "
     "got dtype float32")])
def test_bad_sampling_request_exits_2(tiny_run, tmp_path, args, line):
  float_codes = tmp_path / "float.npy"
  np.save(float_codes, np.zeros((8, 8), np.float32))
  args = [a.format(float_codes=float_codes) for a in args]
  out_path = tmp_path / "out.gif"
  out, _ = _run([sys.executable, "-m", "lumos_jax.sample", f"--workdir={tiny_run[0]}",
                 "--steps=2", f"--out={out_path}", *args])
  _refused(out, line.format(float_codes=float_codes))
  assert not out_path.with_suffix(".npy").exists()


def test_sampling_from_a_directory_that_is_no_run_exits_2(tmp_path):
  out, _ = _run([sys.executable, "-m", "lumos_jax.sample", f"--workdir={tmp_path}"])
  _refused(out, f"--workdir={tmp_path}: {tmp_path / 'config.json'} not found: --workdir must be a "
           "training workdir (python -m lumos_jax.train writes config.json there)")
