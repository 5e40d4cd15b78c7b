"""Training fed from a TFDS dataset (data.kind="tfds") starts exactly like the shared tiny run,
which is fed from the record directories it generates (data.kind="synthetic")."""
import subprocess
import sys

from lumos_jax import config
from lumos_jax.data import records, tfds as tfds_data
from helpers import REPO
from runs import losses, train_command

STEPS = 3


def test_training_from_tfds_starts_with_the_record_runs_losses(tiny_run, tmp_path):
  workdir, record_losses = tiny_run
  tiny = config.load("tiny")
  # Steps 1-3 of a 3-step run equal those of the 40-step run only while the schedule ignores
  # the total step count.
  assert tiny.optim.schedule == "constant", "compare with a run of the same length instead"
  data_dir = tmp_path / "tfds"
  built = subprocess.run([sys.executable, "-m", "lumos_jax.data", "tfds", "lumos_synthetic/tiny",
                          str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr
  # the `tiny` TFDS config holds the videos configs/tiny.py trains on, in the same order
  for split in ("train", "eval"):
    source = tfds_data.TfdsSource("lumos_synthetic/tiny", split, data_dir)
    expected = records.RecordSource(workdir / "data" / split)
    assert [source[i] for i in range(len(source))] == [expected[i] for i in range(len(expected))]

  run_dir = tmp_path / "run"
  cmd, env = train_command(run_dir, f"--config.steps={STEPS}", "--config.data.kind=tfds",
                           "--config.data.tfds_name=lumos_synthetic/tiny",
                           f"--config.data.tfds_data_dir={data_dir}")
  run = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert not (run_dir / "data").exists()  # nothing generated: the data came from TFDS
  assert losses(run_dir) == {s: record_losses[s] for s in range(1, STEPS + 1)}  # bitwise
