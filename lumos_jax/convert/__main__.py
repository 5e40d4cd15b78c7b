"""`python -m lumos_jax.convert import HF_DIR WORKDIR` / `... export WORKDIR HF_DIR`.

  import: an official Lumos-1 checkpoint directory (config.json + *.safetensors, sharded or not;
          bf16/f16 tensors become float32) -> WORKDIR with config.json and checkpoints/0/params,
          ready for `python -m lumos_jax.sample --workdir=WORKDIR --tokenizer=.../tokenizer.json`
          or `python -m lumos_jax.train ... --config.init_from=WORKDIR`.
  export: the latest checkpoint of a run (or --step) -> HF_DIR in the transformers Chameleon
          format (float32 safetensors, shards of at most --max_shard_gb, config.json).
A checkpoint that does not match its config is refused with every bad tensor named, one per line
(exit code 2), and nothing is written.
"""
from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Sequence

from absl import app, flags

from lumos_jax import cli
from lumos_jax.convert import export_checkpoint, import_checkpoint

USAGE = ("usage: python -m lumos_jax.convert import HF_DIR WORKDIR | "
         "export WORKDIR HF_DIR [--step=N] [--max_shard_gb=2]")


def command(f, args: Sequence[str]) -> int:
  """Runs `import` or `export` for the positional `args`; returns the exit code."""
  if len(args) != 3 or args[0] not in ("import", "export"):
    raise app.UsageError(f"{USAGE} (got {list(args)})")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  _release_freed_memory()
  logging.getLogger("lumos_jax.convert").setLevel(logging.INFO)
  action, src, dst = args
  try:
    if action == "import":
      import_checkpoint(src, dst)
    else:
      export_checkpoint(src, dst, step=f.step if f.step >= 0 else None,
                        max_shard_bytes=int(f.max_shard_gb * (1 << 30)))
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {dst}")
  return 0


def _release_freed_memory() -> None:
  """Makes glibc hand large freed buffers back to the OS at once (mmap above 64 KiB, trim on
  free): the converter frees one ~GB array per parameter kind, and glibc's default dynamic
  thresholds keep such memory in the heap (measured on the 1B shape: peak RSS 5.0 GiB without,
  3.2 GiB with). No effect where the C library is not glibc."""
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return
  m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters (malloc.h)
  libc.mallopt(m_mmap_threshold, 64 << 10)
  libc.mallopt(m_trim_threshold, 0)


def main(argv: Sequence[str]) -> int:
  """In-process: `argv` follows `python -m lumos_jax.convert` (no program name)."""
  return cli.run(define_flags, command, "convert", argv)


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  flags.DEFINE_integer("step", -1, "export: the checkpoint step (-1: the latest)", flag_values=fv)
  flags.DEFINE_float("max_shard_gb", 2.0, "export: the largest safetensors file, in GiB",
                     flag_values=fv)


if __name__ == "__main__":
  cli.run_script(define_flags, command)
