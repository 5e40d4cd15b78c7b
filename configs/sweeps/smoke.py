"""Smoke sweep: the tiny config with MM-RoPE vs 1-D RoPE, 4 steps each (about a minute in all on 2
CPU cores). Each run logs every step, evaluates once at the end (eval_loss and its per-frame
values) and saves one checkpoint (step 4: what marks the run finished).

Run: python -m lumos_jax.sweep configs/sweeps/smoke.py --workdir=/tmp/lumos_sweep_smoke
"""
from lumos_jax import config, sweep


def get_config():
  """The base config of both runs (the trainer loads this file with the runs' overrides)."""
  cfg = config.load("tiny")
  cfg.steps = 4
  cfg.checkpoint_every = 4
  cfg.eval_every = 4
  cfg.eval_batches = 1
  cfg.mesh = (-1, 1, 1)  # any device count that divides the batch of 8
  return cfg


def get_sweep():
  return sweep.product({"model.rope_variant": ("mm", "1d")})
