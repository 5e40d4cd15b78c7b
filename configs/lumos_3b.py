"""Lumos-1 3B: a Llama-3.2-3B-shaped decoder over the 129,536-token Lumos vocabulary.

The official 3B sizes are not published (LUMOS_REFERENCE.md section 5, UNCONFIRMED): this uses the
Llama-3.2-3B body (28 layers, d 3072, 24 heads, 8 KV heads, head_dim 128, MLP 8192) with an untied
129,536-row embedding and head, about 3.62B parameters (a third-party summary quotes 3.6B).

Run: python -m lumos_jax.train --config=configs/lumos_3b.py --workdir=/tmp/lumos_3b
"""
from lumos_jax import config


def get_config():
  cfg = config.base(dict(
      vocab_size=129_536, visual_offset=65_536, d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128,
      mlp_dim=8192, dtype="bfloat16"), vocab="lumos")
  cfg.steps = 100_000
  cfg.checkpoint_every = 1000
  cfg.optim.update(lr=1e-4, min_lr=1e-4, warmup_steps=250, schedule="constant")
  cfg.data.update(kind="records", seq_len=32_768, batch_size=8, max_frames=7)
  return cfg
