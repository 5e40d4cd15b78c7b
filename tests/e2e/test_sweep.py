"""The sweep command: the smoke sweep end to end (two tiny runs, the summary, a second pass that
skips both), failing runs, the print and slurm launchers, and sweep files that fail their check
before anything runs."""
import csv
import json
import os
import shlex
import subprocess
import sys

import pytest

from helpers import REPO
from lumos_jax import sweep

SMOKE = "configs/sweeps/smoke.py"
NAMES = ["rope_variant-mm", "rope_variant-1d"]


def _sweep(path, root, *extra):
  """The command in a subprocess from the repository root (stdout and stderr as text)."""
  return subprocess.run([sys.executable, "-m", "lumos_jax.sweep", str(path), f"--workdir={root}",
                         *extra], env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


def _sweep_file(tmp_path, sets: str, name="s.py"):
  """A sweep file on the tiny config whose get_sweep() returns the Python expression `sets`."""
  path = tmp_path / name
  path.write_text("from lumos_jax import config\n\n\ndef get_config():\n  return "
                  f"config.load('tiny')\n\n\ndef get_sweep():\n  return {sets}\n")
  return path


def test_smoke_sweep_trains_summarizes_and_then_skips(tmp_path):
  root = tmp_path / "smoke"
  first = _sweep(SMOKE, root)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert "run 1/2 rope_variant-mm: training" in first.stdout
  assert "run 2/2 rope_variant-1d: training" in first.stdout and "ETA" in first.stdout
  saved = [_flat(json.loads((root / n / "config.json").read_text())) for n in NAMES]
  assert {k for k in saved[0] if saved[0][k] != saved[1][k]} == {"model.rope_variant"}
  assert [s["model.rope_variant"] for s in saved] == ["mm", "1d"]
  assert json.loads((root / NAMES[1] / "overrides.json").read_text())["overrides"] == {
      "model.rope_variant": "1d"}
  assert [r["name"] for r in json.loads((root / "sweep.json").read_text())["runs"]] == NAMES
  rows = list(csv.DictReader((root / "summary.csv").open()))
  assert [(r["name"], r["model.rope_variant"], r["status"], r["step"]) for r in rows] == [
      (NAMES[0], "mm", "finished", "4"), (NAMES[1], "1d", "finished", "4")]
  for r in rows:  # the final train loss, the eval loss and its per-frame values (2 frames)
    assert 0 < float(r["loss"]) < 10 and 0 < float(r["eval_loss"]) < 10
    assert float(r["eval_loss_frame1"]) > 0 and float(r["wall_s"]) > 0
  table = (root / "summary.md").read_text()
  assert table.strip() in first.stdout and "| rope_variant-1d | 1d | finished | 4 |" in table
  metrics = [(root / n / "metrics.jsonl").read_text() for n in NAMES]

  second = _sweep(SMOKE, root)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  for i, n in enumerate(NAMES, 1):
    assert f"run {i}/2 {n}: finished earlier, skipped" in second.stdout
  assert "training" not in second.stdout
  assert [(root / n / "metrics.jsonl").read_text() for n in NAMES] == metrics
  _ablation_report_of(root, tmp_path / "docs" / "ablations.md")


def _ablation_report_of(root, out):
  """The ablations command on the smoke sweep's finished runs (training skipped; they are the
  MM-RoPE / tube cell and one 1-D RoPE run): it samples and scores them, the mm run at each
  rho_inf, and writes a report whose verdicts, with one seed per cell, are all inconclusive."""
  run = subprocess.run([sys.executable, "-m", "lumos_jax.synthetic.ablations",
                        f"--workdir={root}", f"--sweep={SMOKE}", "--n=2", f"--out={out}"],
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  assert "finished earlier, skipped" in run.stdout and "evaluation 4/4" in run.stderr
  results = json.loads((root / "ablations.json").read_text())
  evals = {r["name"]: r["evals"] for r in results["runs"]}
  assert sorted(evals[NAMES[0]]) == ["0", "0.3", "0.7"] and sorted(evals[NAMES[1]]) == ["0.7"]
  for ev in evals[NAMES[0]].values():  # the per-frame scores average to the video scores
    assert len(ev["frames"]["color_acc"]) == 2 and ev["wall_s"] > 0
    assert sum(ev["frames"]["color_acc"]) / 2 == pytest.approx(ev["color_acc"])
  text = out.read_text()
  for claim in ("1. MM-RoPE", "2. tube masking", "3. rho_inf at inference"):
    assert f"| {claim} | inconclusive |" in text
  assert (out.parent / "ablations" / "claim3_adherence_by_frame.png").exists()


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
  """Meshes the 8 devices cannot hold (checked by the trainer, which knows the devices): both
  runs fail, the second still runs, both are recorded with the trainer's error."""
  path = _sweep_file(tmp_path, "[{'mesh': (3, 1, 1)}, {'mesh': (5, 1, 1)}]")
  root = tmp_path / "root"
  out = _sweep(path, root)
  assert out.returncode == 1
  assert "run 2/2 mesh-5x1x1: failed" in out.stdout
  rows = list(csv.DictReader((root / "summary.csv").open()))
  assert [(r["name"], r["status"], r["returncode"]) for r in rows] == [
      ("mesh-3x1x1", "failed", "2"), ("mesh-5x1x1", "failed", "2")]  # a refused config: 2
  record = json.loads((root / "mesh-3x1x1" / "sweep_run.json").read_text())
  assert any("mesh=(3, 1, 1)" in line for line in record["log_tail"])  # from its train.log
  assert "mesh-3x1x1 failed (return code 2)" in (root / "summary.md").read_text()


def test_slurm_launcher_prints_one_sbatch_line_per_run(tmp_path, capsys):
  root = tmp_path / "cluster"
  assert sweep.main([str(REPO / SMOKE), f"--workdir={root}", "--launcher=slurm",
                     "--sbatch_args=--partition=gpu --time=1:00:00"]) == 0
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sbatch ")]
  assert len(lines) == 2
  for line, name in zip(lines, NAMES):
    args = shlex.split(line)
    script = args.index("launch/slurm.sbatch")
    assert {"--partition=gpu", "--time=1:00:00", f"--job-name={name}"} <= set(args[:script])
    assert args[script + 1:] == [f"--config={REPO / SMOKE}", f"--workdir={root / name}",
                                 f"--config.model.rope_variant={name.split('-')[1]}"]
  assert (root / "submit_slurm.sh").read_text().splitlines()[1:] == lines
  assert not list(root.rglob("metrics.jsonl"))  # nothing ran


def test_print_launcher_names_runs_and_round_trips_values(tmp_path, capsys):
  path = _sweep_file(tmp_path, (
      "[{'data.strides': (1, 2, 2), 'optim.lr': 3e-4, 'data.mask.kind': 'per_frame'}, "
      "{'data.tfds_name': 'lumos synthetic/tiny', 'data.train': ('/a', '/b b'), 'seed': 3}, "
      "{'data.strides': [1, 2, 2], 'optim.lr': 0.0003, 'data.mask.kind': 'per_frame', "
      "'model.rope_theta': 500, 'distributed.enabled': False}]"))
  root = tmp_path / "r"
  assert sweep.main([str(path), f"--workdir={root}", "--launcher=print"]) == 0
  args = [shlex.split(line)[3:] for line in capsys.readouterr().out.splitlines()]
  assert args[0][1:] == [f"--workdir={root / 'strides-1x2x2_lr-0.0003_mask.kind-per_frame'}",
                         "--config.data.strides=(1, 2, 2)", "--config.optim.lr=0.0003",
                         "--config.data.mask.kind=per_frame"]
  name = "tfds_name-lumos-synthetic-tiny_train--ax-b-b_seed-3"  # [A-Za-z0-9._-] only
  assert args[1][1:] == [f"--workdir={root / name}", "--config.data.tfds_name=lumos synthetic/tiny",
                         "--config.data.train=('/a', '/b b')", "--config.seed=3"]
  long_name = args[2][1].rsplit("/", 1)[1]  # over 64 characters: cut, and a hash of the set
  assert len(long_name) == 64 and long_name.startswith("strides-1x2x2_lr-0.0003_mask.kind-per")
  assert not root.exists()


@pytest.mark.parametrize("sets, message", [
    ("[{'model.rope_variant': '1d'}, {'model.rope_varaint': 'mm'}]",
     "override set 1 .* no key 'model.rope_varaint'; did you mean model.rope_variant"),
    ("[{'steps': 'ten'}]", "override set 0 .*--config.steps=ten"),
    ("[{'model.rope_variant': '2d'}]", "override set 0 .*rope variant must be one of"),
    ("[{'data.eval': '/data/eval'}]", "NoneType'> of field config.data.eval"),  # None fields
    ("[{'model.rope_variant': '1d'}, {'model.rope_variant': '1d'}]", "appears twice"),
])
def test_bad_sweep_files_fail_before_anything_runs(tmp_path, sets, message):
  root = tmp_path / "root"
  with pytest.raises(ValueError, match=message):
    sweep.main([str(_sweep_file(tmp_path, sets)), f"--workdir={root}"])
  assert not root.exists()
