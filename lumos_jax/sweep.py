"""Config sweeps: named training runs from one sweep file, trained here one after another
(resumably) or printed as commands / sbatch lines, and a summary table of their results.

  python -m lumos_jax.sweep configs/sweeps/smoke.py --workdir=ROOT [--launcher=local|print|slurm]

A sweep file is a config file (`get_config()`, the base config; the trainer loads the same file)
plus `get_sweep()`: a list of override sets {dotted field: value} (`product` builds a grid). A run
is `python -m lumos_jax.train --config=SWEEP_FILE --workdir=ROOT/NAME --config.FIELD=VALUE ...`
in a subprocess of its own (jax state, signals and crashes stay per run); sbatch gets the same
flags. Before anything runs, each run's flags are parsed as the trainer parses them and the values
read back compared with the sweep's, and the model config is checked: ValueError names the file,
the override set and the field. NAME: `FIELD-VALUE` pairs joined by `_`, FIELD the shortest dotted
suffix unique in the config, characters outside [A-Za-z0-9._-] replaced; over 64 characters, or
shared by two runs, it ends in a hash of the overrides (so it depends on the run's own overrides).
ROOT gets sweep.json and per run NAME/overrides.json, train.log (appended per attempt) and
sweep_run.json (status, return code, wall time, log tail), then summary.md and summary.csv. A run
with a checkpoint of step cfg.steps is finished and skipped; any other resumes from its latest.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import io
import itertools
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence

import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from lumos_jax import checkpoint, cli, config as config_lib, config_checks
from lumos_jax.train import metrics

LAUNCHERS = ("local", "print", "slurm")
MAX_NAME, TAIL_LINES = 64, 20
LOG, RECORD = "train.log", "sweep_run.json"


def product(axes: Mapping[str, Sequence]) -> list[dict]:
  """The grid of `axes` ({dotted field: values}), one override set per combination."""
  return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


@dataclasses.dataclass
class Run:
  name: str
  overrides: dict  # {dotted field: value}, as the sweep file gave them
  flags: list[str]  # --config.FIELD=VALUE, in the sweep file's order
  cfg: ml_collections.ConfigDict  # what the trainer reads from the sweep file and `flags`


def load(path: str) -> list[Run]:
  """The runs of sweep file `path`, each checked (module docstring); ValueError otherwise."""
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"sweep file {path} not found")
  spec = importlib.util.spec_from_file_location(f"lumos_sweep_{epath.Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ("get_config", "get_sweep"):
    if not callable(getattr(module, fn, None)):
      raise ValueError(f"sweep file {path} must define {fn}() (see lumos_jax/sweep.py)")
  base = module.get_config()
  runs = [_run(path, i, overrides, base) for i, overrides in enumerate(module.get_sweep())]
  if not runs:
    raise ValueError(f"sweep file {path}: get_sweep() returned no override sets")
  names = [r.name for r in runs]
  for r in runs:  # a shared name gets a hash; equal override sets stay equal
    r.name = r.name if names.count(r.name) == 1 else f"{r.name[:MAX_NAME - 9]}-{_digest(r)}"
  if len({r.name for r in runs}) < len(runs):
    raise ValueError(f"sweep file {path}: an override set appears twice in {names}")
  return runs


def _run(path: str, i: int, overrides, base) -> Run:
  where = f"sweep file {path}, override set {i} ({overrides!r})"
  if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
    raise ValueError(f"{where}: expected a dict {{'dotted.field': value}}")
  unknown = config_checks.unknown_key_errors(base, list(overrides))  # the trainer's own check
  if unknown:
    raise ValueError(f"{where}: {'; '.join(unknown)}")
  fields = config_checks.flat_keys(base)
  run_flags = [f"--config.{k}={_flag_value(v)}" for k, v in overrides.items()]
  slug = lambda v: "x".join(map(slug, v)) if isinstance(v, (tuple, list)) else str(v)
  name = "_".join(f"{_short(k, fields)}-{slug(v)}" for k, v in overrides.items()) or "base"
  cfg = _parse(path, run_flags, overrides, where)
  try:
    config_lib.model_config(cfg)  # the checks that need no devices: RoPE / head_dim, vocabulary
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from e
  run = Run(re.sub(r"[^A-Za-z0-9._-]+", "-", name), dict(overrides), run_flags, cfg)
  if len(run.name) > MAX_NAME:
    run.name = f"{run.name[:MAX_NAME - 9]}-{_digest(run)}"
  return run


def _flag_value(value) -> str:
  """The text after `--config.FIELD=` that config_flags reads back as `value`: tuples as Python
  literals (its tuple parser evaluates them), strings as they are (str fields take the text),
  the rest by repr (exact for floats)."""
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return value if isinstance(value, str) else repr(value)


def _parse(path: str, run_flags: list[str], overrides: Mapping, where: str):
  """The config the trainer builds from `--config=path` and `run_flags`, checked against
  `overrides` (a value the flag syntax cannot carry would otherwise change silently)."""
  argv = ["lumos_jax.train", f"--config={path}", *run_flags]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv, lock_config=True)
  try:
    with warnings.catch_warnings():  # config_flags loads the file with importlib's load_module
      warnings.simplefilter("ignore", DeprecationWarning)
      fv(argv)
  except (flags.Error, ValueError, TypeError, KeyError, AttributeError) as e:
    raise ValueError(f"{where}: the trainer would reject {run_flags}: {e}") from e
  for (key, value), flag in zip(overrides.items(), run_flags):
    got = fv.config
    for part in key.split("."):
      got = got[part]
    if _plain(got) != _plain(value):
      raise ValueError(f"{where}: field {key}={value!r} passes as {flag}, which the trainer "
                       f"reads as {got!r}")
  return fv.config


def _plain(x):
  """Tuples and lists as tuples, config dicts as dicts, recursively (for comparisons)."""
  x = x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  return tuple(map(_plain, x)) if isinstance(x, (tuple, list)) else x


def _short(key: str, fields: list[str]) -> str:
  """The shortest dotted suffix of `key` that no other field of the config ends with."""
  parts = key.split(".")
  for n in range(1, len(parts)):
    tail = ".".join(parts[-n:])
    if sum(f == tail or f.endswith("." + tail) for f in fields) == 1:
      return tail
  return key


def _digest(run: Run) -> str:
  text = json.dumps(sorted(_plain(run.overrides).items()), default=repr)
  return hashlib.sha1(text.encode()).hexdigest()[:8]


def train_flags(sweep_path: str, root: epath.Path, run: Run) -> list[str]:
  """The flags of `python -m lumos_jax.train` (and of the sbatch script) for `run`."""
  return [f"--config={sweep_path}", f"--workdir={root / run.name}", *run.flags]


def status(root: epath.Path, run: Run) -> str:
  """finished (a checkpoint of step cfg.steps exists), else the last attempt's failed/pending."""
  if run.cfg.steps in checkpoint.steps(root / run.name):
    return "finished"
  return _read_json(root / run.name / RECORD).get("status", "pending")


def _read_json(path: epath.Path) -> dict:
  return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: epath.Path, value) -> None:
  path.write_text(json.dumps(value, indent=1) + "\n")


def write_plan(sweep_path: str, root: epath.Path, runs: list[Run]) -> None:
  """ROOT/sweep.json and ROOT/NAME/overrides.json."""
  for run in runs:
    (root / run.name).mkdir(parents=True, exist_ok=True)
    _write_json(root / run.name / "overrides.json", dict(name=run.name, overrides=run.overrides,
                                                         flags=run.flags))
  _write_json(root / "sweep.json", dict(sweep=str(sweep_path), runs=[
      dict(name=r.name, overrides=r.overrides, workdir=str(root / r.name)) for r in runs]))


def run_local(sweep_path: str, root: epath.Path, runs: list[Run]) -> None:
  """Trains the unfinished runs one after another; progress and ETA on stdout. SIGINT / SIGTERM:
  no further run; the running trainer gets SIGTERM (it saves a checkpoint and exits)."""
  stop = {"signal": None, "proc": None}

  def forward(signum, _):
    stop["signal"] = signum
    if stop["proc"] is not None and stop["proc"].poll() is None:
      stop["proc"].send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  todo, walls = [r.name for r in runs if status(root, r) != "finished"], []
  try:
    for i, run in enumerate(runs, 1):
      head = f"run {i}/{len(runs)} {run.name}"
      if run.name not in todo:
        print(f"{head}: finished earlier, skipped", flush=True)
        continue
      if stop["signal"] is not None:
        break
      left = len(todo) - todo.index(run.name)
      eta = f" (ETA {sum(walls) / len(walls) * left:.0f} s for {left} run(s))" if walls else ""
      print(f"{head}: training, log in {root / run.name / LOG}{eta}", flush=True)
      record = _attempt(sweep_path, root, run, stop)
      print(f"{head}: {record['status']} after {record['last_wall_s']:.0f} s (return code "
            f"{record['returncode']})", *[f"  | {line}" for line in record["log_tail"]],
            sep="\n", flush=True)
      walls += [record["last_wall_s"]] if record["status"] == "finished" else []
    if stop["signal"] is not None:
      print(f"stopped by signal {stop['signal']}: the same command resumes the sweep", flush=True)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _attempt(sweep_path: str, root: epath.Path, run: Run, stop: dict) -> dict:
  """Runs the trainer once on the run's workdir; returns and saves its updated record."""
  workdir = root / run.name
  cmd = [sys.executable, "-m", "lumos_jax.train", *train_flags(sweep_path, root, run)]
  record = {"attempts": 0, "wall_s": 0.0, **_read_json(workdir / RECORD)}
  t0 = time.monotonic()
  with open(str(workdir / LOG), "a") as log:
    log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
    log.flush()
    # Its own session: a terminal's Ctrl-C reaches the sweep alone, which sends SIGTERM on.
    stop["proc"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    rc = stop["proc"].wait()
  stop["proc"], wall = None, time.monotonic() - t0
  finished = run.cfg.steps in checkpoint.steps(workdir)
  state = "finished" if finished else "pending" if stop["signal"] is not None else "failed"
  tail = (workdir / LOG).read_text().splitlines()[-TAIL_LINES:] if state == "failed" else []
  record.update(status=state, returncode=rc, attempts=record["attempts"] + 1,
                wall_s=round(record["wall_s"] + wall, 1), last_wall_s=round(wall, 1),
                log_tail=tail)
  _write_json(workdir / RECORD, record)
  return record


def _last_metrics(path: epath.Path) -> dict:
  """step and loss of the last train line and the eval_loss* of the last eval line."""
  out = {}
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # a line being written
      continue
    if "eval_loss" in row:
      out = {k: v for k, v in out.items() if not k.startswith("eval_loss")}
    out.update({k: v for k, v in row.items() if k.startswith("eval_loss")})
    out.update({"step": row["step"], "loss": row["loss"]} if "loss" in row else {})
  return out


def summary(root: epath.Path, runs: list[Run]) -> tuple[list[str], list[dict]]:
  """(columns, one row per run) of the summary table."""
  rows = []
  for run in runs:
    record = _read_json(root / run.name / RECORD)
    rows.append({"name": run.name, **{k: _flag_value(v) for k, v in run.overrides.items()},
                 "status": status(root, run), **_last_metrics(metrics.paths(root / run.name)[0]),
                 **{k: record.get(k) for k in ("wall_s", "returncode", "log_tail")}})
  keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
  frames = sorted({k for row in rows for k in row if k.startswith("eval_loss_frame")},
                  key=lambda k: int(k.removeprefix("eval_loss_frame")))
  return ["name", *keys, "status", "step", "loss", "eval_loss", *frames, "wall_s",
          "returncode"], rows


def markdown(columns: list[str], rows: list[dict]) -> str:
  """The table, then each failed run's return code and log tail."""
  cell = lambda c, v: ("-" if v is None else f"{v:.0f}" if c == "wall_s"
                       else f"{v:.4f}" if isinstance(v, float) else str(v))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
  for row in rows:
    if row["status"] == "failed" and row["log_tail"] is not None:
      lines += ["", f"{row['name']} failed (return code {row['returncode']}); the end of its "
                f"{LOG}:", "```", *row["log_tail"], "```"]
  return "\n".join(lines)


def report(root: epath.Path, runs: list[Run]) -> int:
  """Writes ROOT/summary.md and summary.csv, prints the markdown; 0 if every run finished."""
  columns, rows = summary(root, runs)
  text = markdown(columns, rows)
  (root / "summary.md").write_text(text + "\n")
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  (root / "summary.csv").write_text(buffer.getvalue())
  print(f"{text}\nwrote {root / 'summary.md'} and {root / 'summary.csv'}")
  return 0 if all(row["status"] == "finished" for row in rows) else 1


def commands(f, sweep_path: str, root: epath.Path, runs: list[Run]) -> list[str]:
  """Shell lines of the unfinished runs (print: trainer commands; slurm: sbatch lines); finished
  runs as comments."""
  lines = []
  for run in runs:
    launch = ([sys.executable, "-m", "lumos_jax.train"] if f.launcher == "print" else
              ["sbatch", f"--job-name={run.name}", f"--output={root / run.name}/slurm-%j.log",
               *shlex.split(f.sbatch_args), f.sbatch_script])
    lines.append(f"# {run.name}: finished" if status(root, run) == "finished"
                 else shlex.join([*launch, *train_flags(sweep_path, root, run)]))
  return lines


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags in `fv` (the global FLAGS as a script; a fresh set per `main`)."""
  flags.DEFINE_string("workdir", None, "sweep root: run NAME trains in ROOT/NAME", flag_values=fv)
  flags.DEFINE_enum("launcher", "local", LAUNCHERS, "local: train the runs here, one after "
                    "another; print: print their commands; slurm: print one sbatch line per "
                    "run and write them to ROOT/submit_slurm.sh (nothing is submitted)",
                    flag_values=fv)
  flags.DEFINE_string("sbatch_script", "launch/slurm.sbatch", "the batch script sbatch runs; it "
                      "takes the flags of python -m lumos_jax.train", flag_values=fv)
  flags.DEFINE_string("sbatch_args", "", "sbatch options put before the script, e.g. "
                      "'--partition=gpu --time=24:00:00'", flag_values=fv)
  flags.DEFINE_bool("summary_only", False, "only write and print the summary of ROOT's runs "
                    "(after cluster runs)", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def command(f, args: Sequence[str]) -> int:
  """Checks the sweep file `args[0]`, then trains, prints or summarizes (see the flags). Returns
  0, or 1 when a run is unfinished after a local sweep or in --summary_only's table."""
  if len(args) != 1:
    raise app.UsageError(f"expected one sweep file, got {list(args)}: python -m lumos_jax.sweep "
                         "configs/sweeps/NAME.py --workdir=ROOT")
  sweep_path, root = args[0], epath.Path(f.workdir)
  runs = load(sweep_path)  # every run checked before anything is written or run
  if f.summary_only:
    return report(root, runs)
  if f.launcher == "print":
    print("\n".join(commands(f, sweep_path, root, runs)))
    return 0
  if f.launcher == "local" and "://" in str(root):
    raise ValueError(f"--workdir={root}: the local launcher writes each run's log and synthetic "
                     "data through local files; use a local or mounted directory")
  write_plan(sweep_path, root, runs)
  if f.launcher == "slurm":
    lines = commands(f, sweep_path, root, runs)
    (root / "submit_slurm.sh").write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n# written to {root / 'submit_slurm.sh'}")
    return 0
  run_local(sweep_path, root, runs)
  return report(root, runs)


def main(argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows `python -m lumos_jax.sweep`. Returns the exit
  code; raises ValueError for a sweep file that does not check (nothing ran then)."""
  return cli.run(define_flags, command, "sweep", argv)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  cli.run_script(define_flags, command)
