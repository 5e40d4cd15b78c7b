"""Data command line: `python -m lumos_jax.data COMMAND [ARGS] [--flag=value ...]`.

  import-lumos INDEX... OUT [--root=ROOT] [--frames=N] [--strict] [--shard_size=K]
      official Lumos-1 pre-tokenized samples -> a record directory (lumos_jax.data.official)
  synthetic OUT [--count=N] [--seed=S] [--frames=T] [--frame_px=P] [--patch_px=Q] [--distractors=D]
      [--cells_per_patch=K] [--sizes=N,...] [--speeds=N,...] [--shard_size=K]
      the embedded procedural video dataset -> a record directory (lumos_jax.synthetic.dataset)
  inspect DIR [--json]
      samples, frame counts, latent resolutions, token lengths and bad records of a directory
  tfds NAME DATA_DIR [--records=DIR] [--count=N] [--eval_count=M] [--seed=S] [--frames=T]
       [--frame_px=P] [--patch_px=Q] [--distractors=D] [--cells_per_patch=K] [--sizes=N,...]
       [--speeds=N,...]
      builds the TFDS dataset NAME (lumos_synthetic[/CONFIG], lumos_records[/CONFIG]) into
      DATA_DIR (lumos_jax.data.tfds)

Flags are absl flags with snake_case names, defined once for all commands (each flag's help names
the commands that take it); a command refuses the flags of other commands. `--help` lists every
command and its flags; `COMMAND --help` describes one. Exit status: 0 on success, 1 when a
command fails (an import with --strict and a bad sample, or nothing imported; inspect finding bad
records; a TFDS build that fails), 2 for usage errors.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from absl import flags

from lumos_jax.data import official, records
from lumos_jax.synthetic import dataset as synthetic

PROG = "python -m lumos_jax.data"
HELP_WIDTH = 100


class Flag(NamedTuple):
  define: Callable  # absl DEFINE_* function
  default: Any
  metavar: str  # shown as --name=METAVAR ("" for booleans)
  help: dict[str, str]  # command -> what the flag means for it
  bounds: dict[str, int] = {}  # lower_bound / upper_bound for DEFINE_integer


def _default(field: str) -> str:
  """"(default X)" for a SyntheticConfig field: the help text follows the generator's defaults."""
  return f"(default {getattr(synthetic.SyntheticConfig, field)})"


FLAGS: dict[str, Flag] = {
    "root": Flag(flags.DEFINE_string, None, "ROOT", {
        "import-lumos": "official code root: index `file` paths and yaml `path`s are relative to "
                        "it and it holds data/num2tokens.json (default: the nearest ancestor of "
                        "the first INDEX that holds data/num2tokens.json)"}),
    "frames": Flag(flags.DEFINE_integer, None, "N", {
        "import-lumos": "cut videos to their first N latent frames and rewrite the header as the "
                        "official trainer does (N frames = 4*(N-1) RGB frames; the duration "
                        "4*(N-1)/fps must be whole seconds: 7 at 12 fps is 2 s, 24 frames). "
                        "Images (1 frame) are never cut. Default: keep every frame",
        "synthetic": "frames per video " + _default("frames"),
        "tfds": "lumos_synthetic: frames per video of a new config " + _default("frames")},
        {"lower_bound": 1}),
    "strict": Flag(flags.DEFINE_boolean, False, "", {
        "import-lumos": "stop at the first bad sample (default: report it and skip it)"}),
    "shard_size": Flag(flags.DEFINE_integer, records.DEFAULT_SHARD_SIZE, "K", {
        "import-lumos": "records per ArrayRecord shard",
        "synthetic": "records per ArrayRecord shard"}, {"lower_bound": 1}),
    "count": Flag(flags.DEFINE_integer, None, "N", {
        "synthetic": f"number of videos (default {synthetic.TRAIN_COUNT})",
        "tfds": f"lumos_synthetic: train videos of a new config (default {synthetic.TRAIN_COUNT})"},
        {"lower_bound": 1}),
    "eval_count": Flag(flags.DEFINE_integer, None, "M", {
        "tfds": "lumos_synthetic: eval videos of a new config, 0 for no eval split (default "
                f"{synthetic.EVAL_COUNT})"},
        {"lower_bound": 0}),
    "seed": Flag(flags.DEFINE_integer, None, "S", {
        "synthetic": "dataset seed: sample i is (seed, i) (default 0)",
        "tfds": "lumos_synthetic: dataset seed of a new config; split eval uses seed + 1 "
                "(default 0)"}, {"lower_bound": 0}),
    "frame_px": Flag(flags.DEFINE_integer, None, "P", {
        "synthetic": "frame side in pixels " + _default("frame_px"),
        "tfds": "lumos_synthetic: frame side in pixels of a new config " + _default("frame_px")},
        {"lower_bound": 1}),
    "patch_px": Flag(flags.DEFINE_integer, None, "Q", {
        "synthetic": "pixels per latent cell " + _default("patch_px"),
        "tfds": "lumos_synthetic: pixels per latent cell of a new config " + _default("patch_px")},
        {"lower_bound": 1}),
    "cells_per_patch": Flag(flags.DEFINE_integer, None, "K", {
        "synthetic": "drawing cells per latent cell side, 1 or 2 (1: one colour per code; a run "
                     "trained on it sets data.synthetic_cells_per_patch to the same) "
                     + _default("cells_per_patch"),
        "tfds": "lumos_synthetic: drawing cells per latent cell side of a new config "
                + _default("cells_per_patch")},
        {"lower_bound": 1}),
    "distractors": Flag(flags.DEFINE_integer, None, "D", {
        "synthetic": "uncaptioned smaller objects per video, occluded by the captioned one (the "
                     "harder variant of the ablations) " + _default("distractors"),
        "tfds": "lumos_synthetic: uncaptioned objects per video of a new config (default 0; "
                "a run trained on it sets data.synthetic_distractors to the same number, which "
                "its evaluation reads)"},
        {"lower_bound": 0}),
    "sizes": Flag(flags.DEFINE_list, None, "N,...", {
        "synthetic": "captioned shape widths in cells, odd (a run trained on it sets "
                     "data.synthetic_sizes to the same) " + _default("sizes"),
        "tfds": "lumos_synthetic: captioned shape widths in cells of a new config "
                + _default("sizes")}),
    "speeds": Flag(flags.DEFINE_list, None, "N,...", {
        "synthetic": "captioned speeds in pixels per frame (a run trained on it sets "
                     "data.synthetic_speeds to the same) " + _default("speeds"),
        "tfds": "lumos_synthetic: captioned speeds in pixels per frame of a new config "
                + _default("speeds")}),
    "json": Flag(flags.DEFINE_boolean, False, "", {
        "inspect": "print one JSON object: samples, frames {T: count}, resolutions {HxW: count}, "
                   "lengths {min, max, mean, total, histogram}, bad, bad_records, vocab"}),
    "records": Flag(flags.DEFINE_string, None, "DIR", {
        "tfds": "lumos_records: the record directory to copy (TFDS manual_dir): a record "
                "directory is split train, a directory of them one split per subdirectory"}),
}
_GENERATOR_FLAGS = ("count", "eval_count", "seed", "frames", "frame_px", "patch_px",
                    "distractors", "cells_per_patch", "sizes", "speeds")
_GEOMETRY_FLAGS = tuple(name for name in _GENERATOR_FLAGS  # the SyntheticConfig fields among them
                        if name in {f.name for f in dataclasses.fields(synthetic.SyntheticConfig)})


def _flag_values(fv: flags.FlagValues, names: Sequence[str]) -> dict:
  """{name: value} of the flags among `names` that were given, the lists (--sizes, --speeds) as
  tuples of ints; ValueError naming the flag when an item is not an integer."""
  out = {}
  for name in names:
    value = fv[name].value
    if isinstance(value, list):
      try:
        value = tuple(int(v) for v in value)
      except ValueError:
        raise ValueError(f"--{name}={','.join(value)}: expected integers separated by commas, "
                         f"e.g. --{name}=5,7") from None
    if value is not None:
      out[name] = value
  return out


def define_flags(fv: flags.FlagValues) -> None:
  """Defines every command's flags (and --help) on `fv`; each help text names its commands."""
  flags.DEFINE_boolean("help", False, "show the commands, or COMMAND's flags", short_name="h",
                       flag_values=fv)
  for name, flag in FLAGS.items():
    text = "; ".join(f"[{command}] {what}" for command, what in flag.help.items())
    flag.define(name, flag.default, text, flag_values=fv, **flag.bounds)


class Command(NamedTuple):
  args: str  # positional arguments, e.g. "INDEX... OUT"
  nargs: tuple[int, int | None]  # (least, most) positional arguments
  summary: str  # one line in `--help`
  description: str  # `COMMAND --help`
  run: Callable[[list[str], flags.FlagValues], int]  # (positional args, flags) -> exit status


def command_flags(command: str) -> list[str]:
  """The flags `command` takes: those whose help has an entry for it."""
  return [name for name, flag in FLAGS.items() if command in flag.help]


# ---- import-lumos -------------------------------------------------------------------------------

def _import_run(args: list[str], fv: flags.FlagValues) -> int:
  *index, out = args
  try:
    result = official.import_lumos(index, out, root=fv.root, frames=fv.frames, strict=fv.strict,
                                   shard_size=fv.shard_size)
  except official.BadRecord as e:
    print(f"error: bad sample (--strict): {e}", file=sys.stderr)
    return 1
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  why = ", ".join(f"{n} {kind}" for kind, n in sorted(result.reasons.items()))
  print(f"imported {result.written} records into {result.out}; skipped {len(result.skipped)} "
        f"bad record(s){f' ({why})' if why else ''}")
  return 0 if result.written else 1


# ---- inspect ------------------------------------------------------------------------------------

def _format_summary(s: dict) -> str:
  counts = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"
  lengths = s["lengths"]
  lines = [f"samples      {s['samples']} ({s['vocab']} vocabulary)",
           f"bad records  {s['bad']}",
           f"frames       {counts(s['frames'])}",
           f"latent HxW   {counts(s['resolutions'])}",
           f"tokens       min {lengths['min']}, mean {lengths['mean']}, max {lengths['max']}, "
           f"total {lengths['total']}",
           "length histogram:"]
  lines += [f"  {bucket:>15}  {n}" for bucket, n in lengths["histogram"].items()]
  lines += [f"bad record {b['index']}: {b['reason']}" for b in s["bad_records"]]
  return "\n".join(lines)


def _inspect_run(args: list[str], fv: flags.FlagValues) -> int:
  try:
    summary = records.summarize(args[0])
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(summary) if fv.json else _format_summary(summary))
  return 1 if summary["bad"] else 0


# ---- synthetic ----------------------------------------------------------------------------------

def _synthetic_run(args: list[str], fv: flags.FlagValues) -> int:
  try:
    cfg = synthetic.SyntheticConfig(**_flag_values(fv, _GEOMETRY_FLAGS))
  except ValueError as e:
    return _usage_error(f"synthetic: {e}")
  count = synthetic.TRAIN_COUNT if fv.count is None else fv.count
  try:
    synthetic.write(args[0], count, fv.seed or 0, cfg, shard_size=fv.shard_size)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {count} synthetic videos ({cfg.frames} frames of {cfg.grid}x{cfg.grid} "
        f"latents) into {args[0]}")
  return 0


# ---- tfds ---------------------------------------------------------------------------------------

def _tfds_run(args: list[str], fv: flags.FlagValues) -> int:
  name, data_dir = args
  from lumos_jax.data import tfds as tfds_data  # tensorflow_datasets only for this command
  given = [f"--{k}" for k in _GENERATOR_FLAGS if fv[k].present]
  try:
    settings = {"train_count" if k == "count" else k: v
                for k, v in _flag_values(fv, _GENERATOR_FLAGS).items()}
    dataset, kwargs = tfds_data.parse_name(name)
    if dataset == tfds_data.SYNTHETIC:
      tfds_data.synthetic_config(kwargs.get("config"), **settings)  # predefined or new, valid
  except ValueError as e:
    return _usage_error(f"tfds: {e}")
  if dataset == tfds_data.SYNTHETIC and fv["records"].present:
    return _usage_error(f"tfds: --records is for {tfds_data.RECORDS}; {dataset} is generated")
  if dataset == tfds_data.RECORDS and given:
    return _usage_error(f"tfds: {', '.join(given)} only apply to {tfds_data.SYNTHETIC}")
  try:
    builder, built = tfds_data.prepare(name, data_dir, records_dir=fv.records, **settings)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  splits = ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items())
  print(f"{'built' if built else 'already prepared:'} {builder.info.full_name} in "
        f"{builder.data_dir} ({splits}); read it with tfds.data_source({name!r}, "
        f"data_dir={data_dir!r}) after importing lumos_jax.data.tfds")
  return 0


# ---- the commands -------------------------------------------------------------------------------
# Register new commands here (and their flags in FLAGS, with the command's name in `help`).
COMMANDS: dict[str, Command] = {
    "import-lumos": Command(
        "INDEX... OUT", (2, None),
        "import official Lumos-1 pre-tokenized samples (.pkl + index) into records",
        official.__doc__.split("\n\n")[0] + "\n\nINDEX: merge-record.json (JSON list of {file, "
        "len, id}), *-record.jsonl, or a data .yaml with META: [{path, ratio}]; several are "
        "imported into one directory. OUT: the record directory to create (must not hold "
        "records). Fills the frame-count/fps prompt placeholders with digit tokens, optionally "
        "cuts videos to N latent frames with the official header rewrite, validates every sample "
        "against the strict official layout (bad ones, and bad index lines as INDEX:LINE, are "
        "reported with the reason and skipped, or fatal with --strict), writes ArrayRecord shards "
        "and prints how many were imported and skipped, per kind of reason.", _import_run),
    "inspect": Command(
        "DIR", (1, 1),
        "summarize a record directory (samples, frames, resolutions, lengths, bad records)",
        "Decodes and parses every record of DIR (a record directory, holding metadata.json) and "
        "prints counts per latent frame count and latent resolution, a token-length histogram "
        "and the bad records (a record that does not decode or parse, or whose frames/size "
        "disagree with its tokens). Exit status 1 when there are bad records.", _inspect_run),
    "synthetic": Command(
        "OUT", (1, 1), "generate the embedded procedural video dataset into records",
        synthetic.__doc__.split("\n\n")[0] + "\n\nWrites COUNT videos (sample i is generated "
        "from (SEED, i) alone) into the record directory OUT in the official layout with the "
        "compact vocabulary and byte-level captions.", _synthetic_run),
    "tfds": Command(
        "NAME DATA_DIR", (2, 2), "build a TFDS dataset (lumos_synthetic, lumos_records)",
        "Builds (download_and_prepare) the TFDS dataset NAME into DATA_DIR as ArrayRecord files, "
        "readable TF-free with tfds.data_source(NAME, data_dir=DATA_DIR) in a process that "
        "imported lumos_jax.data.tfds, or with data.kind='tfds' in a training config. NAME: "
        "lumos_synthetic[/CONFIG] (configs default: 2000/64 videos, tiny: 64/8; the generator "
        "flags make a new CONFIG under a name of yours, e.g. lumos_synthetic/my_videos) or "
        "lumos_records[/CONFIG] (a copy of the record directory --records). An already "
        "prepared dataset is reused.", _tfds_run),
}


# ---- parsing ------------------------------------------------------------------------------------

def _usage_error(message: str) -> int:
  print(f"error: {message}\nusage: {PROG} COMMAND [ARGS] [--flag=value ...]; `{PROG} --help` "
        "lists the commands and their flags", file=sys.stderr)
  return 2


def _wrap(text: str, indent: str, more: str = "  ") -> list[str]:
  return textwrap.wrap(text, HELP_WIDTH, initial_indent=indent, subsequent_indent=indent + more)


def _flag_lines(command: str, indent: str) -> list[str]:
  lines = []
  for name in command_flags(command):
    flag = FLAGS[name]
    shown = f"--[no]{name}" if not flag.metavar else f"--{name}={flag.metavar}"
    default = "" if flag.default in (None, False) else f" (default {flag.default})"
    lines += _wrap(f"{shown}: {flag.help[command]}{default}", indent, "    ")
  return lines


def help_text(command: str | None = None) -> str:
  """`--help` (every command and its flags) or `COMMAND --help` (its description and flags)."""
  if command is not None:
    c = COMMANDS[command]
    paragraphs = [line for p in c.description.split("\n\n") for line in [*_wrap(p, "", ""), ""]]
    return "\n".join([f"usage: {PROG} {command} {c.args} [--flag=value ...]", "",
                      *paragraphs, "flags:", *_flag_lines(command, "  ")])
  lines = [f"usage: {PROG} COMMAND [ARGS] [--flag=value ...]", "",
           *_wrap("lumos_jax data tools: token records (ArrayRecord + msgpack), official-sample "
                  "import, inspection, TFDS datasets.", "", ""), "", "commands:"]
  for name, c in COMMANDS.items():
    lines += [f"  {name} {c.args}", f"      {c.summary}", *_flag_lines(name, "      ")]
  lines += ["", *_wrap(f"`{PROG} COMMAND --help` describes a command. Exit status: 0 ok, 1 the "
                       "command failed, 2 usage error.", "", "")]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs one command; returns the exit status. Flags are parsed on a fresh FlagValues per call
  (the global absl FLAGS are untouched), so tests can call main repeatedly."""
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    args = fv([PROG, *(sys.argv[1:] if argv is None else argv)])[1:]
  except flags.Error as e:
    return _usage_error(str(e))
  command = args.pop(0) if args else None
  if command is not None and command not in COMMANDS:
    return _usage_error(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
  if fv.help:
    print(help_text(command))
    return 0
  if command is None:
    return _usage_error(f"no command given; commands: {', '.join(COMMANDS)}")
  c = COMMANDS[command]
  own = command_flags(command)
  foreign = [f"--{name}" for name in FLAGS if fv[name].present and name not in own]
  if foreign:
    return _usage_error(f"{command} takes no {', '.join(foreign)} (its flags: "
                        f"{', '.join('--' + f for f in own) or 'none'})")
  least, most = c.nargs
  if len(args) < least or (most is not None and len(args) > most):
    return _usage_error(f"{command} takes {c.args}, got {len(args)} argument(s): {args}")
  return c.run(args, fv)


if __name__ == "__main__":
  sys.exit(main())
