"""Fine-tuning from the command line: --config.init_from starts a run from the shared tiny run's
parameters at step 0 (its first loss is far below a fresh model's), and a restart of that run
resumes its own checkpoint instead of starting over from init_from."""
from __future__ import annotations

import subprocess

from helpers import REPO
from runs import losses, train_command


def _train(workdir, *overrides) -> subprocess.CompletedProcess:
  cmd, env = train_command(workdir, *overrides)
  out = subprocess.run(cmd, env=env, cwd=REPO, check=False, timeout=600, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_init_from_fine_tunes_then_resumes_its_own_checkpoint(tmp_path, tiny_run):
  source, source_losses = tiny_run
  run = tmp_path / "finetune"
  first = _train(run, f"--config.init_from={source}", "--config.steps=2",
                 "--config.checkpoint_every=2")
  assert f"initialised from {source}" in first.stdout
  # Step 1 of the fine-tune starts from trained parameters: near the source's last losses,
  # well below the fresh model's first loss.
  assert losses(run)[1] < source_losses[1] - 0.5
  again = _train(run, f"--config.init_from={source}", "--config.steps=3",
                 "--config.checkpoint_every=3")
  assert "resuming from step 2" in again.stdout
  assert "initialised from" not in again.stdout
  assert sorted(losses(run)) == [1, 2, 3]
