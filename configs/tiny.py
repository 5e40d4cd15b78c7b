"""A tiny decoder for tests: 2 layers, d 64, 4 heads / 2 KV heads of 32, compact vocabulary.

Run: python -m lumos_jax.train --config=configs/tiny.py --workdir=/tmp/lumos_tiny
"""
import ml_collections


def get_config():
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0
  cfg.steps = 20
  cfg.checkpoint_every = 10
  cfg.vocab = "compact"  # lumos_jax.tokens.Vocab.compact(): 840 ids, 512 visual codes
  cfg.mesh = (2, 2, 2)
  cfg.model = ml_collections.ConfigDict(dict(
      vocab_size=840, visual_offset=328, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, mlp_dim=128,
      rope_variant="mm", rope_theta=10000.0, norm_eps=1e-5, dtype="float32", remat="full",
      attention="xla", attention_block_q=16, max_lookahead=40, init_std=0.02))
  return cfg
