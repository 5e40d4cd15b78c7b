"""Optimizer and learning-rate schedule (LUMOS_REFERENCE.md section 7).

AdamW (betas 0.9 / 0.95, weight decay 0.1 on every parameter, as the official trainer), global-norm
clipping (4.0), and a linear warmup followed by a half-cosine from `lr` to `min_lr` over the
remaining steps, or a constant `lr` (the released fine-tuning scripts use lr = min_lr: constant).
"""
from __future__ import annotations

import optax

SCHEDULES = ("cosine", "constant")


def schedule(cfg, total_steps: int) -> optax.Schedule:
  """Learning rate per optimizer step from `cfg.optim` fields lr, min_lr, warmup_steps, schedule."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={cfg.schedule!r}: choose one of {SCHEDULES}")
  warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
  if cfg.schedule == "constant":
    after = optax.constant_schedule(cfg.lr)
  else:
    after = optax.cosine_decay_schedule(cfg.lr, max(total_steps - cfg.warmup_steps, 1),
                                        alpha=cfg.min_lr / cfg.lr if cfg.lr else 0.0)
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make(cfg, total_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm(clip) -> AdamW(schedule, b1, b2, weight_decay) from `cfg.optim`."""
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                  weight_decay=cfg.weight_decay))
