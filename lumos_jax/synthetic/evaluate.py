"""Caption adherence of a model trained on the embedded synthetic dataset.

  python -m lumos_jax.synthetic.evaluate --workdir=/tmp/lumos_demo [--n=32] [--steps=16] \\
      [--guidance=3] [--history_mask=0.7] [--step=K] [--json]

Generates one video (text-to-video, `data.max_frames` frames) for each of the first N captions of
the held-out eval split (the videos written to WORKDIR/data/eval: seed data.synthetic_seed + 1,
never trained on; with 128 possible captions the captions themselves also occur in training) and
scores it against its caption with `synthetic.score`: shape and colour accuracy per frame,
direction accuracy, trajectory error, temporal consistency, and the drawn objects' area over the
true ones'. Prints a table with three baselines beside the model's row:
  chance            uniform guessing over the dataset's shapes / colours / directions
  shuffled          the same generated videos scored against another video's caption (what the
                    model's output distribution alone would get)
  dataset videos    the eval videos themselves (the scorer's ceiling)
Writes into --out (default WORKDIR/eval): scores.json, contact_sheet.png (one row per video, its
frames left to right, caption and per-video scores beside them), samples.gif and samples.mp4 (the
first 8 videos, animated) and videos/NNN.gif + .npy codes for each video. `--json` prints the
scores as one JSON object (keys shape_acc, color_acc, direction_acc, ..., chance, shuffled, dataset,
settings). `--help` lists every flag.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from etils import epath
from PIL import Image, ImageDraw

from lumos_jax import cli
from lumos_jax.synthetic import dataset, score, video

TABLE_KEYS = ("shape_acc", "color_acc", "direction_acc", "trajectory_error_px",
              "temporal_consistency", "detected", "area_ratio")


def eval_samples(cfg, n: int, syn: dataset.SyntheticConfig) -> list[dataset.Sample]:
  """The first n held-out eval samples of a synthetic run (as its trainer generated them)."""
  if n < 2:
    raise ValueError(f"--n={n}: need at least 2 videos (the shuffled-caption baseline pairs them)")
  if n > cfg.data.synthetic_eval_count:
    raise ValueError(f"--n={n}: the run's eval split has data.synthetic_eval_count="
                     f"{cfg.data.synthetic_eval_count} videos")
  return [dataset.generate(cfg.data.synthetic_seed + 1, i, syn) for i in range(n)]


def contact_sheet(videos, captions, rows, scale: int = 3, label_px: int = 260) -> np.ndarray:
  """uint8 image: one row per video (frames left to right, 2 px gaps), caption + scores beside."""
  t, h, w, _ = videos[0].shape
  hs, ws, gap = h * scale, w * scale, 2
  sheet = Image.new("RGB", (t * (ws + gap) + label_px, len(videos) * (hs + gap)), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for i, (rgb, caption, r) in enumerate(zip(videos, captions, rows)):
    y = i * (hs + gap)
    for f, frame in enumerate(rgb):
      sheet.paste(Image.fromarray(frame.repeat(scale, 0).repeat(scale, 1)), (f * (ws + gap), y))
    text = (f"{caption}\nshape {r['shape_acc']:.2f} colour {r['color_acc']:.2f} "
            f"direction {'ok' if r['direction_acc'] else 'wrong'}")
    draw.text((t * (ws + gap) + 6, y + hs // 2 - 12), text, fill=(0, 0, 0))
  return np.asarray(sheet)


def _json_safe(x):
  """NaN (an unscorable trajectory) -> null, so that the output is strict JSON."""
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_json_safe(v) for v in x]
  return None if isinstance(x, float) and x != x else x


def _row(name: str, s: dict) -> str:
  cells = [("-" if k not in s or s[k] != s[k] else f"{s[k]:.3f}") for k in TABLE_KEYS]
  return f"| {name} | " + " | ".join(cells) + " |"


def run(workdir: str, n: int, steps: int, cfg_scale: float, seed: int, out: str | None,
        temperature_schedule: str = "cumulative", top_k: int = 0, step: int | None = None,
        history_mask: float = 0.7, temperature: float = 1.0, code_bias: tuple = (),
        log=sys.stderr) -> dict:
  """Generates, scores and writes everything; returns the scores dict (see module docstring)."""
  from lumos_jax import config as config_lib, sample
  train_cfg = config_lib.load_run(workdir)
  if train_cfg.data.kind != "synthetic":
    raise ValueError(f"{workdir} was trained on data.kind={train_cfg.data.kind!r}: evaluate scores "
                     "runs on the embedded synthetic dataset only")
  tokenizer = sample.synthetic_tokenizer(train_cfg)
  syn = tokenizer.cfg
  samples = eval_samples(train_cfg, n, syn)  # checks before loading or compiling anything
  dest = epath.Path(out or epath.Path(workdir) / "eval")
  out = _staging(dest)  # dest itself, or a local directory copied to dest (gs://...) at the end
  (out / "videos").mkdir(parents=True, exist_ok=True)
  sampler, _, vocab = sample.load(workdir, step)
  sc = sample.SampleConfig(frames=syn.frames, height=syn.grid, width=syn.grid, fps=syn.fps,
                           duration=syn.duration, steps=steps, cfg_scale=cfg_scale,
                           temperature=temperature, temperature_schedule=temperature_schedule,
                           top_k=top_k, history_mask=history_mask, code_limit=tokenizer.n_codes,
                           code_bias=tuple(code_bias))
  videos, rows, t0 = [], [], time.perf_counter()
  for i, s in enumerate(samples):
    codes = sampler.generate(vocab.encode_text(s.caption), sc, seed=seed + i)
    rgb = tokenizer.decode(codes)
    np.save(out / "videos" / f"{i:03d}.npy", codes)
    video.write_captioned(out / "videos" / f"{i:03d}.gif", rgb, s.caption, fps=syn.fps)
    videos.append(rgb)
    rows.append(score.score(rgb, s.caption, syn, s.video))
    per = (time.perf_counter() - t0) / (i + 1)
    print(f"video {i + 1}/{n}: {s.caption!r} shape {rows[-1]['shape_acc']:.2f} colour "
          f"{rows[-1]['color_acc']:.2f} direction {rows[-1]['direction_acc']:.0f}, "
          f"{per:.1f} s/video, ETA {per * (n - i - 1):.0f} s", file=log, flush=True)
  captions = [s.caption for s in samples]
  scores = score.mean_scores(rows)
  scores["chance"] = score.chance(syn)
  scores["shuffled"] = score.mean_scores(
      [score.score(v, captions[(i + 1) % n], syn) for i, v in enumerate(videos)])
  scores["dataset"] = score.mean_scores(
      [score.score(tokenizer.decode(tokenizer.encode(s.video)), s.caption, syn, s.video)
       for s in samples])
  scores["settings"] = dict(workdir=str(workdir), checkpoint_step=step, n=n, steps=steps,
                            guidance=cfg_scale, seed=seed, temperature=temperature,
                            temperature_schedule=temperature_schedule, top_k=top_k,
                            history_mask=history_mask, code_bias=list(code_bias),
                            frames=syn.frames)
  scores["per_video"] = [dict(caption=c, **r) for c, r in zip(captions, rows)]
  (out / "scores.json").write_text(json.dumps(_json_safe(scores), indent=1, allow_nan=False))
  Image.fromarray(contact_sheet(videos, captions, rows)).save(out / "contact_sheet.png")
  grid = np.concatenate([video.captioned(v, c) for v, c in zip(videos[:8], captions)], 1)
  for suffix in ("gif", "mp4"):
    video.write_video(out / f"samples.{suffix}", grid, fps=syn.fps)
  _publish(out, dest)
  return scores


def _staging(dest: epath.Path) -> pathlib.Path:
  """Where `run` writes (a pathlib.Path: imageio takes no other path type): `dest` itself when it
  is local; for an object store (a scheme such as gs://) a temporary local directory, since numpy,
  PIL and ffmpeg write local files."""
  if "://" in str(dest):
    return pathlib.Path(tempfile.mkdtemp(prefix="lumos_eval_"))
  return pathlib.Path(dest)


def _publish(staged: pathlib.Path, dest: epath.Path) -> None:
  """Copies a staging directory's files to an object-store `dest` and removes it (nothing to do
  for a local `dest`: `run` wrote there)."""
  if "://" not in str(dest):
    return
  for path in sorted(p for p in staged.rglob("*") if p.is_file()):
    target = dest / str(path.relative_to(staged))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
  shutil.rmtree(staged)


def table(scores: dict) -> str:
  """Markdown table of the model's scores and the three baselines."""
  head = "| | " + " | ".join(TABLE_KEYS) + " |\n|---|" + "---|" * len(TABLE_KEYS)
  n = scores["settings"]["n"]
  return "\n".join([head, _row(f"generated (n={n})", scores), _row("shuffled captions",
                    scores["shuffled"]), _row("chance", scores["chance"]),
                    _row("dataset videos", scores["dataset"])])


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines the command's flags in `fv`: the global FLAGS when run as a script, a fresh set per
  `main` call; importing this module defines none."""
  from lumos_jax.sample.sampler import SCHEDULES  # the sampler's list, not a copy of it
  flags.DEFINE_string("workdir", None, "training workdir of a run on the synthetic dataset",
                      flag_values=fv)
  flags.DEFINE_integer("n", 32, "held-out captions to generate (2 .. data.synthetic_eval_count)",
                       flag_values=fv)
  flags.DEFINE_integer("steps", 16, "masked-decoding steps per frame", flag_values=fv)
  flags.DEFINE_float("guidance", 3.0, "classifier-free guidance scale", flag_values=fv)
  flags.DEFINE_float("history_mask", 0.7, "fraction of each finished frame masked in the cache "
                     "(rho_inf; 0: none)", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_float("temperature", 1.0, "Gumbel confidence noise (see lumos_jax.sample)",
                     lower_bound=0.0, flag_values=fv)
  flags.DEFINE_enum("temperature_schedule", "cumulative", SCHEDULES, "see lumos_jax.sample",
                    flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "sample among the k likeliest codes (0: all)", flag_values=fv)
  flags.DEFINE_list("code_bias", [], "CODE:BIAS,...: logits added to codes after guidance (the "
                    "empty patch: 0:-1 makes it e times less likely)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "video i uses seed + i", flag_values=fv)
  flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=fv)
  flags.DEFINE_string("out", None, "output folder (default: WORKDIR/eval)", flag_values=fv)
  flags.DEFINE_bool("json", False, "print one JSON object instead of the table", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def command(f, args: Sequence[str]) -> int:
  """Runs the evaluation for parsed flag values `f` (see `define_flags`) and the positional
  arguments `args` (there must be none); prints the table or the JSON object; returns 0."""
  if args:
    raise app.UsageError(f"unexpected arguments {list(args)}: evaluate takes --flags only "
                         "(quote values with spaces)")
  from lumos_jax.sample.sampler import parse_code_bias
  scores = run(f.workdir, f.n, f.steps, f.guidance, f.seed, f.out, f.temperature_schedule,
               f.top_k, f.step, f.history_mask, f.temperature, parse_code_bias(f.code_bias))
  if f.json:
    print(json.dumps(_json_safe({k: v for k, v in scores.items() if k != "per_video"}),
                     allow_nan=False))
  else:
    out = f.out or epath.Path(f.workdir) / "eval"
    print(table(scores))
    print(f"wrote {out}/scores.json, contact_sheet.png, samples.gif, samples.mp4 and videos/")
  return 0


def main(argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows `python -m lumos_jax.synthetic.evaluate` (no
  program name), parsed into a fresh flags.FlagValues, so it can be called repeatedly. Returns the
  exit code (0). Raises flags.Error for a bad command line (unknown or ill-typed flag, no
  --workdir), app.UsageError for positional arguments, ValueError for a request the run cannot
  serve (checked before anything is loaded or compiled)."""
  return cli.run(define_flags, command, "evaluate", argv)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  cli.run_script(define_flags, command)
