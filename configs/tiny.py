"""A tiny decoder for tests: 2 layers, d 64, 4 heads / 2 KV heads of 32, compact vocabulary,
trained on a few synthetic videos cut to 2 frames.

Run: python -m lumos_jax.train --config=configs/tiny.py --workdir=/tmp/lumos_tiny
"""
from lumos_jax import config, tokens


def get_config():
  cfg = config.base(dict(vocab_size=840, visual_offset=328, d_model=64, n_layers=2, n_heads=4,
                         n_kv_heads=2, head_dim=32, mlp_dim=128, attention_block_q=64,
                         max_lookahead=tokens.frame_block_length(8, 8) - 1), vocab="compact")
  cfg.steps = 20
  cfg.checkpoint_every = 10
  cfg.log_every = 1
  cfg.mesh = (2, 2, 2)
  cfg.optim.update(lr=1e-3, min_lr=1e-3, warmup_steps=5)
  cfg.data.update(kind="synthetic", synthetic_count=64, synthetic_eval_count=8, seq_len=200,
                  batch_size=8, max_frames=2, strides=(1, 4, 4))
  return cfg
