"""Training: `python -m lumos_jax.train --config=configs/demo.py --workdir=DIR [--config.x=...]`.

Re-running the same command on the same workdir resumes from the latest checkpoint (state and
data iterator). Outputs in WORKDIR: `config.json`, `checkpoints/`, `metrics.jsonl` (one JSON line
per logged step, full float precision), TensorBoard event files in `tb/`, and for the synthetic
dataset the generated records in `data/`. SIGTERM saves a checkpoint and exits cleanly.

A config that does not check (`lumos_jax.config.validate`), an unknown `--config.KEY` or a config
file that does not load is refused before any data or compilation: one `error: ...` line per
problem on stderr, no traceback, exit code 2.
"""
import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from lumos_jax import config as config_lib
from lumos_jax.config_checks import unknown_key_errors
from lumos_jax.data import pipeline
from lumos_jax.train import loop

log = logging.getLogger("lumos_jax.train")
BAD_CONFIG_EXIT = 2  # the exit code of a refused config (usage errors, as argparse)


def refuse(lines) -> int:
  """Prints each error line to stderr as `error: LINE` (no traceback); returns the exit code."""
  for line in lines:
    print(f"error: {line}", file=sys.stderr)
  return BAD_CONFIG_EXIT


def main(argv):
  """Trains; a config that validation refuses prints its error lines and exits with code 2."""
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/grain chatter at INFO
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  if flags.FLAGS.workdir is None or flags.FLAGS.config is None:
    raise app.UsageError("--config=configs/<name>.py and --workdir=DIR are required")
  try:
    cfg = flags.FLAGS.config
    cfg.keys()  # a config file that did not load raises on first use
  except OSError as e:
    return refuse([_load_error(sys.argv, e)])
  try:
    loop.train(cfg, flags.FLAGS.workdir)
  except config_lib.ConfigError as e:
    return refuse(e.errors)
  except pipeline.NothingUsable as e:  # e.g. data.seq_len shorter than every record
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, except that a --config.KEY override of a key the config does not have
  (config_flags raises AttributeError or KeyError while parsing) exits with code 2 and one line
  per unknown key, the closest known keys suggested; any other flag error (an ill-typed value, an
  unknown flag) or a config file that does not load exits with code 2 and one line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    lines = _unknown_keys(argv) or [f"bad --config override: {e}"]
    sys.exit(refuse(lines))
  except OSError as e:  # the config file does not load (overrides touch it while parsing)
    sys.exit(refuse([_load_error(argv, e)]))
  except flags.Error as e:  # ill-typed value, unknown flag, ...: absl's message, one line
    sys.exit(refuse([str(e).splitlines()[0] if str(e) else type(e).__name__]))


def _unknown_keys(argv: list[str]) -> list[str]:
  """The unknown-key lines of the --config.KEY overrides in argv (empty when there are none or
  the config file cannot be read)."""
  file = _config_file(argv)
  overrides = [re.sub(r"^--?(no)?config\.", "", a.split("=", 1)[0]) for a in argv
               if re.match(r"^--?(no)?config\.", a)]
  try:
    return unknown_key_errors(config_lib.load(file), overrides) if file else []
  except Exception:  # a config file that does not load: config_flags' own error stands
    return []


def _load_error(argv: list[str], e: OSError) -> str:
  """The one line of a config file that config_flags could not load (its last line of reason)."""
  reason = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
  return f"--config={_config_file(argv)}: the config file does not load ({reason[-1]})"


def _config_file(argv: list[str]) -> str | None:
  """The value of the last --config=FILE in argv (None without one)."""
  files = [a.split("=", 1)[1] for a in argv if re.match(r"^--?config=", a)]
  return files[-1] if files else None


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
  flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and data")
  app.run(main, flags_parser=parse_flags)
