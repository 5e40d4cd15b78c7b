"""Lumos-1 1B: a Llama-3.2-1B-shaped decoder over the 129,536-token Lumos vocabulary.

The official 1B sizes are not published (LUMOS_REFERENCE.md section 5, UNCONFIRMED): this uses the
Llama-3.2-1B body (16 layers, d 2048, 32 heads, 8 KV heads, head_dim 64, MLP 8192) with an untied
129,536-row embedding and head, about 1.50B parameters.

Run: python -m lumos_jax.train --config=configs/lumos_1b.py --workdir=/tmp/lumos_1b
"""
import ml_collections


def get_config():
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0
  cfg.steps = 100_000
  cfg.checkpoint_every = 1000
  cfg.vocab = "lumos"
  cfg.mesh = (1, -1, 1)  # (data, fsdp, tensor); -1 absorbs the remaining devices
  cfg.model = ml_collections.ConfigDict(dict(
      vocab_size=129_536, visual_offset=65_536, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
      mlp_dim=8192, rope_variant="mm", rope_theta=10000.0, norm_eps=1e-5, dtype="bfloat16",
      remat="full", attention="xla", attention_block_q=256, max_lookahead=4083, init_std=0.02))
  return cfg
