"""docs/ablations.md from the ablations' results (`ablations.collect`, saved as
WORKDIR/ablations.json): per claim a table of means with 95% confidence intervals over seeds, a
plot by frame index, and a verdict from a rule fixed before the numbers.

Statistics: the unit is one training run (one seed); a cell's value is the mean over its seeds
with a Student-t 95% interval (n = 3 seeds: mean +- 4.30 x standard error). A difference between
two cells is Welch's interval (different models: claims 1 and 2) or the interval of the per-seed
differences (the same models sampled two ways: claim 3). Verdict: "reproduced" when the interval
of the claimed difference lies wholly on the claimed side of 0, "not reproduced" when it lies
wholly on the other side, otherwise "inconclusive". A comparison of generations is also
"inconclusive" unless at least one of its cells adheres to the captions above chance (its interval
wholly above what uniform guessing scores): below that the models do not draw what they are asked
for, and which of two such models is less wrong says nothing about the claim.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from etils import epath

# Student-t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal 1.96)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)
GEN_KEYS = ("adherence", "shape_acc", "color_acc", "direction_acc", "temporal_consistency",
            "trajectory_error_px")


def t975(df: float) -> float:
  """The two-sided 95% Student-t quantile (df rounded down, so intervals err on the wide side)."""
  return math.nan if not df >= 1 else T975[int(df) - 1] if df < 31 else 1.96


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean and the half-width of its 95% interval (NaN when n < 2)."""
  mean: float
  half: float
  n: int

  def __str__(self):
    if math.isnan(self.mean):
      return "-"
    return f"{self.mean:.3f}" + ("" if math.isnan(self.half) else f" ± {self.half:.3f}")


def estimate(values) -> Estimate:
  """Mean and t interval of the values (None and NaN dropped)."""
  x = np.array([v for v in values if v is not None and not math.isnan(v)], np.float64)
  if not len(x):
    return Estimate(math.nan, math.nan, 0)
  half = t975(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
  return Estimate(float(x.mean()), float(half), len(x))


def welch(a, b) -> Estimate:
  """The difference mean(a) - mean(b) of two independent samples, Welch's 95% interval."""
  a, b = (np.array([v for v in s if v is not None], np.float64) for s in (a, b))
  if len(a) < 2 or len(b) < 2:
    return Estimate(float(a.mean() - b.mean()) if len(a) and len(b) else math.nan, math.nan, 0)
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  df = se ** 4 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else len(a) + len(b) - 2
  return Estimate(float(a.mean() - b.mean()), t975(df) * se, len(a) + len(b))


def paired(a: dict, b: dict) -> Estimate:
  """The mean of the per-seed differences a[seed] - b[seed] over the seeds both hold."""
  return estimate([a[s] - b[s] for s in a if s in b and None not in (a[s], b[s])])


def verdict(diff: Estimate, claimed: str) -> str:
  """"reproduced" / "not reproduced" / "inconclusive" for a difference claimed `claimed`
  ("positive" or "negative") (module docstring)."""
  if math.isnan(diff.half):
    return "inconclusive"
  lo, hi = diff.mean - diff.half, diff.mean + diff.half
  sign = 1 if claimed == "positive" else -1
  if min(sign * lo, sign * hi) > 0:
    return "reproduced"
  return "not reproduced" if max(sign * lo, sign * hi) < 0 else "inconclusive"


def _mean(xs) -> float | None:
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def run_metrics(run: dict, rho: str) -> dict:
  """The per-run numbers the tables use: eval losses, and the generations at rho_inf `rho`."""
  frames = run["eval_loss_frames"]
  out = {"eval_loss": run["eval_loss"], "frame_loss": frames,
         "loss_frame0": frames[0] if frames else None,
         "loss_later": _mean(frames[1:]),
         "loss_later_over_first": _mean(frames[1:]) / frames[0] if len(frames) > 1 else None}
  ev = run["evals"].get(rho)
  if ev:
    out.update({k: ev.get(k) for k in GEN_KEYS[1:]})
    out["adherence"] = _mean([ev["shape_acc"], ev["color_acc"], ev["direction_acc"]])
    per_frame = [_mean([s, c]) for s, c in zip(ev["frames"]["shape_acc"],
                                                ev["frames"]["color_acc"])]
    out.update(first_frame_adherence=per_frame[0], later_frames_adherence=_mean(per_frame[1:]),
               frame_adherence=per_frame, frame_path_offset=ev["frames"]["path_offset_px"])
  return out


def cell(results: dict, rope: str, mask: str, rho: str = "0.7") -> dict:
  """{seed: run_metrics} of the finished runs of one (rope, mask) cell."""
  return {r["seed"]: run_metrics(r, rho) for r in results["runs"]
          if (r["rope"], r["mask"]) == (rope, mask) and r["status"] == "finished"}


def column(c: dict, key: str) -> dict:
  """{seed: value} of one metric of a cell."""
  return {s: m.get(key) for s, m in c.items()}


def table(rows: dict[str, dict], keys: Sequence[str]) -> str:
  """Markdown: one row per labelled cell, each metric as mean ± 95% interval over its seeds."""
  head = ["| | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  return "\n".join(head + [f"| {label} | {len(c)} | " + " | ".join(
      str(estimate(column(c, k).values())) for k in keys) + " |" for label, c in rows.items()])


def plot_by_frame(path: epath.Path, title: str, ylabel: str, series: dict[str, dict],
                  key: str, chance: float | None = None) -> None:
  """A PNG of a per-frame metric (`key`: a list per run) against the frame index: per labelled
  cell the mean over seeds with its 95% interval as error bars; `chance` as a dashed line."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 3.6))
  plotted = False
  for i, (label, c) in enumerate(series.items()):
    per_seed = [m[key] for m in c.values() if m.get(key)]
    if not per_seed:
      continue
    est = [estimate(v) for v in zip(*per_seed)]
    x = np.arange(len(est)) + (i - (len(series) - 1) / 2) * 0.06  # side by side, not on top
    ax.errorbar(x, [e.mean for e in est], yerr=[0 if math.isnan(e.half) else e.half for e in est],
                marker="o", capsize=3, label=label)
    plotted = True
  if chance is not None and not math.isnan(chance):
    ax.axhline(chance, color="grey", linestyle="--", label="chance")
    plotted = True
  ax.set(title=title, xlabel="frame index", ylabel=ylabel)
  ax.grid(alpha=0.3)
  if plotted:
    ax.legend()
  fig.tight_layout()
  fig.savefig(str(path), dpi=110)
  plt.close(fig)


REASONS = {"reproduced": "interval wholly on the claimed side",
           "not reproduced": "interval wholly on the other side",
           "inconclusive": "interval includes 0, or too few runs"}


def _difference_line(name: str, diff: Estimate, claimed: str,
                     floor: tuple[list[dict], str, float] | None = None) -> tuple[str, str]:
  """(a sentence giving the difference, its interval and verdict; the verdict). `floor`:
  (cells, metric, chance level) of a comparison of generations, which decides nothing unless
  some cell's interval of that metric lies wholly above chance: models that do not follow their
  captions cannot show that one way of training or sampling follows them better."""
  v = verdict(diff, claimed)
  side = "above" if claimed == "positive" else "below"
  reason = REASONS[v]
  if floor and not any(_above(c, floor[1], floor[2]) for c in floor[0]):
    v, reason = "inconclusive", (f"no cell's {floor[1]} lies above chance ({floor[2]:.3f}): "
                                 "the models do not follow the captions yet")
  return f"{name}: {diff} (claimed {side} 0; {reason}) -> **{v}**", v


def _above(c: dict, key: str, level: float) -> bool:
  """Whether a cell's 95% interval of `key` lies wholly above `level`."""
  e = estimate(column(c, key).values())
  return not math.isnan(e.half) and e.mean - e.half > level


def chance_levels(results: dict) -> dict:
  """{"adherence", "frame_adherence"}: what uniform guessing over the dataset's shapes, colours
  and directions scores (NaN before any evaluation)."""
  chance = next((e["chance"] for r in results["runs"] for e in r["evals"].values()
                 if "chance" in e), None)
  if chance is None:
    return {"adherence": math.nan, "frame_adherence": math.nan}
  return {"adherence": float(np.mean([chance["shape_acc"], chance["color_acc"],
                                      chance["direction_acc"]])),
          "frame_adherence": (chance["shape_acc"] + chance["color_acc"]) / 2}


def _overall(verdicts: list[str]) -> str:
  """A claim with several parts: reproduced if every part is, not reproduced if any is not."""
  if "not reproduced" in verdicts:
    return "not reproduced"
  return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def claim_rope(results: dict, figs: epath.Path) -> tuple[str, str]:
  """Claim 1: MM-RoPE's eval loss below 1-D and naive 3-D RoPE's (tube masking)."""
  cells = {f"`{r}`": cell(results, r, "tube") for r in ("mm", "3d", "1d")}
  plot_by_frame(figs / "claim1_loss_by_frame.png", "Claim 1: eval loss by frame (tube masking)",
                "eval loss", {k.strip("`"): c for k, c in cells.items()}, "frame_loss")
  chance = chance_levels(results)
  lines, verdicts = [], []
  for other in ("1d", "3d"):
    line, v = _difference_line(f"eval loss, `mm` - `{other}`", welch(
        column(cells["`mm`"], "eval_loss").values(),
        column(cells[f"`{other}`"], "eval_loss").values()), "negative")
    lines.append(f"- {line}")
    verdicts.append(v)
  for other in ("1d", "3d"):  # generations: reported, not part of the verdict
    line, _ = _difference_line(f"caption adherence (informative), `mm` - `{other}`", welch(
        column(cells["`mm`"], "adherence").values(),
        column(cells[f"`{other}`"], "adherence").values()), "positive",
        ([cells["`mm`"], cells[f"`{other}`"]], "adherence", chance["adherence"]))
    lines.append(f"- {line}")
  text = "\n".join([
      "## Claim 1: MM-RoPE beats 1-D RoPE and naive 3-D RoPE", "",
      "Tube masking; generations at rho_inf 0.7. Verdict on the final eval loss (held-out "
      "videos, the tube masks of training): MM-RoPE's must be lower than both others'.", "",
      table(cells, ("eval_loss", *GEN_KEYS)), "", *lines, "",
      "![eval loss by frame](ablations/claim1_loss_by_frame.png)"])
  return text, _overall(verdicts)


def claim_masking(results: dict, figs: epath.Path) -> tuple[str, str]:
  """Claim 2: random masking makes later frames too easy (their loss falls far below frame 0's)
  and tube masking fixes that, with better generations (MM-RoPE)."""
  cells = {"tube": cell(results, "mm", "tube"), "random": cell(results, "mm", "random")}
  plot_by_frame(figs / "claim2_loss_by_frame.png", "Claim 2: eval loss by frame (each run's "
                "own masking)", "eval loss", cells, "frame_loss")
  chance = chance_levels(results)
  plot_by_frame(figs / "claim2_adherence_by_frame.png", "Claim 2: adherence by frame "
                "(rho_inf 0.7)", "(shape + colour accuracy) / 2", cells, "frame_adherence",
                chance["frame_adherence"])
  imbalance, v1 = _difference_line(
      "later/first frame loss ratio, random - tube", welch(
          column(cells["random"], "loss_later_over_first").values(),
          column(cells["tube"], "loss_later_over_first").values()), "negative")
  generations, v2 = _difference_line(
      "caption adherence, tube - random", welch(column(cells["tube"], "adherence").values(),
                                                column(cells["random"], "adherence").values()),
      "positive", (list(cells.values()), "adherence", chance["adherence"]))
  text = "\n".join([
      "## Claim 2: random masking makes later frames too easy; tube masking fixes it", "",
      "MM-RoPE; each run's eval loss under its own training masks (the imbalance the paper "
      "plots); generations at rho_inf 0.7. Two parts, both must hold: (a) the loss ratio of the "
      "later frames to the first is lower with random masking; (b) tube masking's generations "
      "adhere better to the caption.", "",
      table({f"`{k}`": c for k, c in cells.items()},
            ("loss_frame0", "loss_later", "loss_later_over_first", "eval_loss", *GEN_KEYS)), "",
      f"- (a) {imbalance}", f"- (b) {generations}", "",
      "![eval loss by frame](ablations/claim2_loss_by_frame.png)",
      "![adherence by frame](ablations/claim2_adherence_by_frame.png)"])
  return text, _overall([v1, v2])


def claim_history(results: dict, figs: epath.Path) -> tuple[str, str]:
  """Claim 3: masking finished frames at inference (rho_inf 0.7) avoids the quality collapse
  after the first frame (the same MM-RoPE / tube models, sampled at each rho_inf)."""
  cells = {f"rho_inf {rho}": cell(results, "mm", "tube", rho) for rho in ("0", "0.3", "0.7")}
  chance = chance_levels(results)["frame_adherence"]
  plot_by_frame(figs / "claim3_adherence_by_frame.png", "Claim 3: adherence by frame",
                "(shape + colour accuracy) / 2", cells, "frame_adherence", chance)
  plot_by_frame(figs / "claim3_path_offset_by_frame.png", "Claim 3: trajectory error by frame",
                "px from the best straight path", cells, "frame_path_offset")
  key = "later_frames_adherence"
  floor = (list(cells.values()), key, chance)
  main, v = _difference_line(f"{key}, rho_inf 0.7 - 0 (paired by seed)", paired(
      column(cells["rho_inf 0.7"], key), column(cells["rho_inf 0"], key)), "positive", floor)
  side, _ = _difference_line(f"{key}, rho_inf 0.3 - 0 (paired by seed, informative)", paired(
      column(cells["rho_inf 0.3"], key), column(cells["rho_inf 0"], key)), "positive", floor)
  text = "\n".join([
      "## Claim 3: partially masked history at inference avoids a collapse after frame 0", "",
      "The MM-RoPE / tube runs, each sampled at rho_inf 0, 0.3 and 0.7 (the same captions and "
      "sampling seeds). Verdict on the adherence of frames 1 and later ((shape + colour "
      "accuracy) / 2 per frame): higher at 0.7 than at 0.", "",
      table(cells, ("first_frame_adherence", key, *GEN_KEYS)), "", f"- {main}", f"- {side}", "",
      "![adherence by frame](ablations/claim3_adherence_by_frame.png)",
      "![trajectory error by frame](ablations/claim3_path_offset_by_frame.png)"])
  return text, v


def _setup(results: dict) -> str:
  """The setup sentence of the report, from the runs' shared settings."""
  u, smp = results["setup"], results["sampling"]
  data = (f"the harder synthetic variant ({u['distractors']} uncaptioned, smaller distractor(s) "
          "per video on their own paths, occluded by the captioned object)" if u["distractors"]
          else "the plain embedded synthetic dataset")
  return (f"Setup: {data}; a decoder of {u['n_layers']} layers, d {u['d_model']}, trained "
          f"{u['steps']} steps of batch {u['batch_size']}, masking floor {u['mask_min_ratio']}; "
          f"eval losses on {u['eval_videos']} held-out videos; generations for the first "
          f"{results['n']} held-out captions ({smp['steps']} decoding steps, guidance "
          f"{smp['cfg_scale']:g}, top-k {smp['top_k']}). Metrics: `lumos_jax.synthetic.score` "
          "(adherence = mean of shape, colour and direction accuracy; per frame, (shape + "
          "colour accuracy) / 2).")


def _header(results: dict) -> list[str]:
  runs = results["runs"]
  trained = [r["train_wall_s"] for r in runs if r["train_wall_s"]]
  train_s = sum(trained)
  evals = [e for r in runs for e in r["evals"].values()]
  eval_s = sum(e["wall_s"] for e in evals)
  missing = [r["name"] for r in runs if r["status"] != "finished"]
  return [
      "# The paper's ablations at small scale", "",
      "Written by `python -m lumos_jax.synthetic.ablations --workdir=WORKDIR` (sweep file "
      f"`{results['sweep']}`; its docstring lists the runs) on {results['date']}, "
      f"{results['cores']} CPU cores. Wall time from scratch: training {train_s / 60:.1f} min "
      f"({len(trained)} runs), sampling and scoring {eval_s / 60:.1f} min ({len(evals)} "
      f"evaluations of {results['n']} videos), {(train_s + eval_s) / 60:.1f} min in all; this "
      f"invocation {results['command_wall_s'] / 60:.1f} min (a rerun skips what is done). The "
      "numbers: WORKDIR/ablations.json.", "",
      _setup(results), "",
      "Statistics: one training run (seed) is one sample; cells give mean ± 95% t interval over "
      "their seeds (with 3 seeds, 4.30 standard errors: only large effects are distinguishable)."
      " Verdict: reproduced when the interval of the claimed difference lies wholly on the "
      "claimed side of 0, not reproduced when wholly on the other side, else inconclusive; a "
      "comparison of generations is inconclusive too unless some cell's adherence interval lies "
      "wholly above chance (models that do not follow their captions cannot show which way "
      "follows them better).", "",
      *([f"**Missing (not finished): {', '.join(missing)}.**", ""] if missing else []),
      *([f"**Missing evaluations: {', '.join(results['missing_evaluations'])}.**", ""]
        if results.get("missing_evaluations") else [])]


def write(results: dict, out: epath.Path) -> bool:
  """Writes the report `out` and its plots (out's folder / ablations/); True when every run
  finished and was evaluated at each of its settings (`missing_evaluations` empty)."""
  figs = out.parent / "ablations"
  figs.mkdir(parents=True, exist_ok=True)
  sections = {"1. MM-RoPE": claim_rope, "2. tube masking": claim_masking,
              "3. rho_inf at inference": claim_history}
  texts, verdicts = [], {}
  for name, fn in sections.items():
    text, verdicts[name] = fn(results, figs)
    texts.append(text)
  summary = ["| claim | verdict |", "|---|---|",
             *[f"| {name} | {v} |" for name, v in verdicts.items()], ""]
  out.write_text("\n".join(_header(results) + summary + ["\n\n".join(texts), ""]))
  return (all(r["status"] == "finished" for r in results["runs"])
          and not results.get("missing_evaluations"))
