"""The paper's three ablations at small scale, from scratch to docs/ablations.md in one command.

  python -m lumos_jax.synthetic.ablations --workdir=/tmp/lumos_ablations \\
      [--sweep=configs/sweeps/ablations.py] [--out=docs/ablations.md] [--n=32] [--report_only]

Three stages, each resumable (a rerun skips what is done, so an interrupted command loses at most
the run or evaluation in progress):
  1. training: the sweep file's runs (`lumos_jax.sweep`, one trainer process per run; 2 CPU
     devices and huge pages by default, as launch/demo.sh), into WORKDIR/NAME;
  2. evaluation: every finished run sampled and scored on N held-out captions
     (`lumos_jax.synthetic.evaluate`: top-k 3, 16 steps, guidance 3) at rho_inf = 0.7, and the
     runs of the claim-3 cell (MM-RoPE, tube masking) also at rho_inf 0 and 0.3, into
     WORKDIR/NAME/eval_rho{rho}/ (scores.json, videos/NNN.npy codes, wall time);
  3. the report (`ablation_report`): WORKDIR/ablations.json (every number it uses), then OUT and
     its plots in OUT's folder / ablations/.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from etils import epath

from lumos_jax import cli

DEFAULT_RHO = 0.7  # the paper's rho_inf, used for every run's generations
RHOS = (0.0, 0.3, 0.7)  # claim 3's rho_inf settings
CLAIM3_CELL = ("mm", "tube")  # (rope_variant, mask kind) of the runs sampled at every rho
# the sampling docs/ablations.md was measured with (the demo's until 2026-11-29; it now samples
# top-k 1 with guidance 1.5, measured on its own 4-frame models only)
SAMPLING = dict(steps=16, cfg_scale=3.0, top_k=3, seed=0)


def cell_of(run) -> tuple[str, str]:
  """(rope_variant, mask kind) of a `sweep.Run`."""
  return run.cfg.model.rope_variant, run.cfg.data.mask.kind


def rhos_of(run) -> tuple[float, ...]:
  return RHOS if cell_of(run) == CLAIM3_CELL else (DEFAULT_RHO,)


def eval_dir(root: epath.Path, run, rho: float) -> epath.Path:
  return root / run.name / f"eval_rho{rho:g}"


def _done(root: epath.Path, run, rho: float, n: int) -> bool:
  """Whether the run was evaluated at `rho` on `n` videos (an evaluation of another n is redone)."""
  folder = eval_dir(root, run, rho)
  return ((folder / "wall.json").exists() and
          json.loads((folder / "scores.json").read_text())["settings"]["n"] == n)


def evaluate_runs(root: epath.Path, runs: list, n: int, log=sys.stderr) -> None:
  """Stage 2: samples and scores each finished run at each of its rhos (skips those done). An
  evaluation that fails is reported and left out (the report lists it as missing)."""
  from lumos_jax.synthetic import evaluate
  todo = [(run, rho) for run in runs for rho in rhos_of(run) if not _done(root, run, rho, n)]
  t0 = time.monotonic()
  for i, (run, rho) in enumerate(todo):
    print(f"evaluation {i + 1}/{len(todo)}: {run.name} at rho_inf {rho:g}", file=log, flush=True)
    start = time.monotonic()
    try:
      evaluate.run(str(root / run.name), n, SAMPLING["steps"], SAMPLING["cfg_scale"],
                   SAMPLING["seed"], str(eval_dir(root, run, rho)), top_k=SAMPLING["top_k"],
                   history_mask=rho, log=log)
    except Exception as e:  # one broken run must not cost the other evaluations
      print(f"evaluation {i + 1}/{len(todo)} FAILED ({run.name} at rho_inf {rho:g}): "
            f"{type(e).__name__}: {e}", file=log, flush=True)
      continue
    (eval_dir(root, run, rho) / "wall.json").write_text(
        json.dumps({"wall_s": round(time.monotonic() - start, 1)}))
    per = (time.monotonic() - t0) / (i + 1)
    print(f"evaluation {i + 1}/{len(todo)} done, ETA {per * (len(todo) - i - 1):.0f} s",
          file=log, flush=True)


def _mean_or_none(values: np.ndarray) -> float | None:
  """Mean of the non-NaN values (JSON null when there are none)."""
  kept = values[~np.isnan(values)]
  return float(kept.mean()) if kept.size else None


def frame_scores(folder: epath.Path, run_cfg, per_video: list[dict]) -> dict:
  """{metric: [T] floats or None} per-frame adherence of an evaluation folder, averaged over its
  videos (`per_video`: its scores.json's; recomputed from the saved codes with
  `score.per_frame`)."""
  from lumos_jax import sample
  from lumos_jax.synthetic import score
  tokenizer = sample.synthetic_tokenizer(run_cfg)
  rows = [score.per_frame(tokenizer.decode(np.load(str(folder / "videos" / f"{i:03d}.npy"))),
                          v["caption"], tokenizer.cfg) for i, v in enumerate(per_video)]
  return {k: [_mean_or_none(col) for col in np.stack([r[k] for r in rows]).T] for k in rows[0]}


def collect(root: epath.Path, runs: list) -> dict:
  """Everything the report uses, per run: cell, seed, final eval losses (per frame), wall time,
  and per rho the evaluation's scores and per-frame adherence."""
  from lumos_jax import sweep
  _, rows = sweep.summary(root, runs)
  out = []
  for run, row in zip(runs, rows):
    evals = {}
    for rho in rhos_of(run):
      folder = eval_dir(root, run, rho)
      if (folder / "wall.json").exists():
        scores = json.loads((folder / "scores.json").read_text())
        evals[f"{rho:g}"] = {**{k: v for k, v in scores.items() if not isinstance(v, (dict, list))},
                             "chance": scores["chance"],
                             "frames": frame_scores(folder, run.cfg, scores["per_video"]),
                             "wall_s": json.loads((folder / "wall.json").read_text())["wall_s"]}
    frames = sorted((k for k in row if k.startswith("eval_loss_frame")),
                    key=lambda k: int(k.removeprefix("eval_loss_frame")))
    out.append({"name": run.name, "rope": cell_of(run)[0], "mask": cell_of(run)[1],
                "seed": run.cfg.seed, "status": row["status"], "steps": run.cfg.steps,
                "eval_loss": row.get("eval_loss"), "eval_loss_frames": [row[k] for k in frames],
                "train_wall_s": row.get("wall_s"), "evals": evals})
  missing = [f"{r['name']} at rho_inf {rho:g}" for run, r in zip(runs, out)
             if r["status"] == "finished" for rho in rhos_of(run) if f"{rho:g}" not in r["evals"]]
  return {"runs": out, "missing_evaluations": missing,
          "setup": setup_of(runs[0].cfg) if runs else {}}


def setup_of(cfg) -> dict:
  """The settings every run shares (the report's setup line)."""
  d, m = cfg.data, cfg.model
  return {"steps": cfg.steps, "batch_size": d.batch_size, "d_model": m.d_model,
          "n_layers": m.n_layers, "distractors": d.get("synthetic_distractors", 0),
          "mask_min_ratio": d.mask.min_ratio, "eval_videos": min(
              cfg.eval_batches * d.batch_size, d.synthetic_eval_count)}


def command(f, args: Sequence[str]) -> int:
  """Runs the stages for parsed flags `f` (see `define_flags`); returns 0, or 1 when a run or an
  evaluation is missing from the report (it is written anyway, saying so)."""
  if args:
    raise app.UsageError(f"unexpected arguments {list(args)}: ablations takes --flags only")
  from lumos_jax import sweep
  from lumos_jax.synthetic import ablation_report
  root, t0 = epath.Path(f.workdir), time.monotonic()
  runs = sweep.load(f.sweep)  # checks every run's flags before anything starts
  if not f.report_only:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count="
                          f"{max(1, min(os.cpu_count() or 1, 8))}")
    os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    sweep.main([f.sweep, f"--workdir={root}"])  # failed runs are reported below, not fatal here
    evaluate_runs(root, [r for r in runs if sweep.status(root, r) == "finished"], f.n)
  results = collect(root, runs)
  results.update(sweep=f.sweep, workdir=str(root), n=f.n, sampling=SAMPLING,
                 command_wall_s=round(time.monotonic() - t0, 1), date=time.strftime("%Y-%m-%d"),
                 cores=os.cpu_count())
  (root / "ablations.json").write_text(json.dumps(results, indent=1))
  complete = ablation_report.write(results, epath.Path(f.out))
  print(f"wrote {f.out} and its plots; the numbers are in {root / 'ablations.json'}")
  return 0 if complete else 1


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines the command's flags in `fv`; importing this module defines none."""
  flags.DEFINE_string("workdir", None, "root of the sweep's runs", flag_values=fv)
  flags.DEFINE_string("sweep", "configs/sweeps/ablations.py", "the sweep file", flag_values=fv)
  flags.DEFINE_string("out", "docs/ablations.md", "the report (its plots: OUT's folder / "
                      "ablations/)", flag_values=fv)
  flags.DEFINE_integer("n", 32, "held-out captions sampled per run and rho_inf", lower_bound=2,
                       flag_values=fv)
  flags.DEFINE_bool("report_only", False, "write the report from what WORKDIR holds, without "
                    "training or evaluating", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def main(argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows `python -m lumos_jax.synthetic.ablations`."""
  return cli.run(define_flags, command, "ablations", argv)


if __name__ == "__main__":
  cli.run_script(define_flags, command)
