"""Lumos-1 3B: a Llama-3.2-3B-shaped decoder over the 129,536-token Lumos vocabulary.

The official 3B sizes are not published (LUMOS_REFERENCE.md section 5, UNCONFIRMED): this uses the
Llama-3.2-3B body (28 layers, d 3072, 24 heads, 8 KV heads, head_dim 128, MLP 8192) with an untied
129,536-row embedding and head, about 3.61B parameters (a third-party summary quotes 3.6B).
Everything else is configs/lumos_1b.py, with the official 3B stage-1 learning rate (1e-4).

Run: python -m lumos_jax.train --config=configs/lumos_3b.py --workdir=/tmp/lumos_3b
"""
from lumos_jax import config


def get_config():
  cfg = config.load("lumos_1b")
  cfg.model.update(d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128, mlp_dim=8192)
  cfg.optim.update(lr=1e-4, min_lr=1e-4)
  return cfg
