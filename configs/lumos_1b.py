"""Lumos-1 1B: a Llama-3.2-1B-shaped decoder over the 129,536-token Lumos vocabulary.

The official 1B sizes are not published (LUMOS_REFERENCE.md section 5, UNCONFIRMED): this uses the
Llama-3.2-1B body (16 layers, d 2048, 32 heads, 8 KV heads, head_dim 64, MLP 8192) with an untied
129,536-row embedding and head, about 1.50B parameters.

Run: python -m lumos_jax.train --config=configs/lumos_1b.py --workdir=/tmp/lumos_1b
"""
from lumos_jax import config


def get_config():
  cfg = config.base(dict(
      vocab_size=129_536, visual_offset=65_536, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
      mlp_dim=8192, dtype="bfloat16"), vocab="lumos")
  cfg.steps = 100_000
  cfg.checkpoint_every = 1000
  cfg.optim.update(lr=1e-4, min_lr=1e-4, warmup_steps=250, schedule="constant")
  cfg.data.update(kind="records", seq_len=32_768, batch_size=8, max_frames=7)
  return cfg
