"""Training: `python -m lumos_jax.train --config=configs/demo.py --workdir=DIR [--config.x=...]`.

Re-running the same command on the same workdir resumes from the latest checkpoint (state and
data iterator). Outputs in WORKDIR: `config.json`, `checkpoints/`, `metrics.jsonl` (one JSON line
per logged step, full float precision), TensorBoard event files in `tb/`, and for the synthetic
dataset the generated records in `data/`. SIGTERM saves a checkpoint and exits cleanly.
"""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from lumos_jax.train import loop

log = logging.getLogger("lumos_jax.train")


def main(argv):
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/grain chatter at INFO
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  if flags.FLAGS.workdir is None or flags.FLAGS.config is None:
    raise app.UsageError("--config=configs/<name>.py and --workdir=DIR are required")
  loop.train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
  flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and data")
  app.run(main)
