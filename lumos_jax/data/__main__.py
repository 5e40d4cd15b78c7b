"""Data command line: `python -m lumos_jax.data <command> ...` (`--help` on each command).

  import-lumos INDEX [INDEX ...] OUT [--root ROOT] [--frames N] [--strict] [--shard-size K]
      official Lumos-1 pre-tokenized samples -> a record directory (lumos_jax.data.official)
  synthetic OUT [--count N] [--seed S] [--frames T] [--frame-px P] [--patch-px Q]
      the embedded procedural video dataset -> a record directory (lumos_jax.data.synthetic)
  inspect DIR [--json]
      samples, frame counts, latent resolutions, token lengths and bad records of a directory

Exit status: 0 on success, 1 when an import fails (--strict and a bad sample, or nothing
imported) or inspect finds bad records, 2 for usage errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import NamedTuple
from collections.abc import Callable, Sequence

from lumos_jax.data import official, records
from lumos_jax.synthetic import dataset as synthetic


class Command(NamedTuple):
  help: str  # one line, shown in `python -m lumos_jax.data --help`
  description: str  # shown in `python -m lumos_jax.data COMMAND --help`
  add_arguments: Callable[[argparse.ArgumentParser], None]
  run: Callable[[argparse.Namespace], int]  # returns the exit status


# ---- import-lumos -------------------------------------------------------------------------------

def _import_arguments(p: argparse.ArgumentParser):
  p.add_argument("index", nargs="+", metavar="INDEX",
                 help="merge-record.json (JSON list of {file, len, id}), *-record.jsonl, or a data "
                      ".yaml with META: [{path, ratio}]; several are imported into one directory")
  p.add_argument("out", metavar="OUT", help="record directory to create (must not hold records)")
  p.add_argument("--root", default=None,
                 help="official code root: index `file` paths and yaml `path`s are relative to it "
                      "and it holds data/num2tokens.json (default: the nearest ancestor of the "
                      "first INDEX that holds data/num2tokens.json)")
  p.add_argument("--frames", type=int, default=None, metavar="N",
                 help="cut videos to their first N latent frames and rewrite the header as the "
                      "official trainer does (N frames = 4*(N-1) RGB frames; the duration "
                      "4*(N-1)/fps must be whole seconds: 7 at 12 fps is 2 s, 24 frames). "
                      "Images (1 frame) are never cut. Default: keep every frame")
  p.add_argument("--strict", action="store_true",
                 help="stop at the first bad sample (default: report it and skip it)")
  p.add_argument("--shard-size", type=int, default=records.DEFAULT_SHARD_SIZE, metavar="K",
                 help="records per ArrayRecord shard (default %(default)s)")


def _import_run(args: argparse.Namespace) -> int:
  try:
    result = official.import_lumos(args.index, args.out, root=args.root, frames=args.frames,
                                   strict=args.strict, shard_size=args.shard_size)
  except official.BadRecord as e:
    print(f"error: bad sample (--strict): {e}", file=sys.stderr)
    return 1
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"imported {result.written} records into {result.out}; skipped {len(result.skipped)} "
        "bad record(s)")
  return 0 if result.written else 1


# ---- inspect ------------------------------------------------------------------------------------

def _inspect_arguments(p: argparse.ArgumentParser):
  p.add_argument("dir", metavar="DIR", help="record directory (holds metadata.json)")
  p.add_argument("--json", action="store_true",
                 help="print one JSON object: samples, frames {T: count}, resolutions "
                      "{HxW: count}, lengths {min, max, mean, total, histogram}, bad, "
                      "bad_records, vocab")


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


def _inspect_run(args: argparse.Namespace) -> int:
  try:
    summary = records.summarize(args.dir)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(summary) if args.json else _format_summary(summary))
  return 1 if summary["bad"] else 0


# ---- synthetic ----------------------------------------------------------------------------------

def _synthetic_arguments(p: argparse.ArgumentParser):
  p.add_argument("out", help="record directory to create")
  p.add_argument("--count", type=int, default=2000, help="number of videos (default 2000)")
  p.add_argument("--seed", type=int, default=0, help="dataset seed: sample i is (seed, i)")
  p.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
  p.add_argument("--frame-px", type=int, default=32, help="frame side in pixels (default 32)")
  p.add_argument("--patch-px", type=int, default=4, help="pixels per latent cell (default 4)")
  p.add_argument("--shard-size", type=int, default=records.DEFAULT_SHARD_SIZE)


def _synthetic_run(args: argparse.Namespace) -> int:
  cfg = synthetic.SyntheticConfig(frame_px=args.frame_px, patch_px=args.patch_px,
                                  frames=args.frames)
  synthetic.write(args.out, args.count, args.seed, cfg, shard_size=args.shard_size)
  print(f"wrote {args.count} synthetic videos ({cfg.frames} frames of {cfg.grid}x{cfg.grid} "
        f"latents) into {args.out}")
  return 0


# ---- the commands -------------------------------------------------------------------------------
# Register new commands here: name -> Command(help, description, add_arguments, run).
COMMANDS: dict[str, Command] = {
    "import-lumos": Command(
        help="import official Lumos-1 pre-tokenized samples (.pkl + index) into records",
        description=official.__doc__.split("\n\n")[0] + "\n\nFills the frame-count/fps prompt "
        "placeholders with digit tokens, optionally cuts videos to N latent frames with the "
        "official header rewrite, validates every sample (bad ones are reported with file and "
        "reason and skipped, or fatal with --strict) and writes ArrayRecord shards.",
        add_arguments=_import_arguments, run=_import_run),
    "inspect": Command(
        help="summarize a record directory (samples, frames, resolutions, lengths, bad records)",
        description="Decodes and parses every record of DIR and prints counts per latent frame "
        "count and latent resolution, a token-length histogram and the bad records (a record "
        "that does not decode or parse, or whose frames/size disagree with its tokens). Exit "
        "status 1 when there are bad records.",
        add_arguments=_inspect_arguments, run=_inspect_run),
    "synthetic": Command(
        help="generate the embedded procedural video dataset into records",
        description=synthetic.__doc__.split("\n\n")[0] + "\n\nWrites COUNT videos (sample i "
        "is generated from (SEED, i) alone) in the official layout with the compact vocabulary "
        "and byte-level captions.",
        add_arguments=_synthetic_arguments, run=_synthetic_run),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m lumos_jax.data", description="lumos_jax data tools: token records "
      "(ArrayRecord + msgpack), official-sample import, inspection.",
      epilog="`python -m lumos_jax.data COMMAND --help` describes each command.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, command in COMMANDS.items():
    command.add_arguments(sub.add_parser(name, help=command.help, description=command.description))
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return COMMANDS[args.command].run(args)


if __name__ == "__main__":
  sys.exit(main())
