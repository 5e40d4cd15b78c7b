"""Lumos-1 1B: a Llama-3.2-1B-shaped decoder over the 129,536-token Lumos vocabulary.

The official 1B sizes are not published (LUMOS_REFERENCE.md section 5, UNCONFIRMED): this uses the
Llama-3.2-1B body (16 layers, d 2048, 32 heads, 8 KV heads, head_dim 64, MLP 8192) with an untied
129,536-row embedding and head, about 1.50B parameters. Training follows the official recipe
(LUMOS_REFERENCE.md section 7): AdamW 0.9/0.95, weight decay 0.1, clip 4, constant lr (1B stage 1:
5e-5) after a short warmup, 7 latent frames, 32k-token sequences; the data are records made with
`python -m lumos_jax.data import-lumos ... --frames 7`, given as
--config.data.train="('/data/videos',)" (a tuple of record directories).

Run: python -m lumos_jax.train --config=configs/lumos_1b.py --workdir=/tmp/lumos_1b
"""
from lumos_jax import config


def get_config():
  cfg = config.base(dict(
      vocab_size=129_536, visual_offset=65_536,
      d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
      mlp_dim=8192, dtype="bfloat16",
      attention="xla_scan",  # memory-bounded attention for 32k-token training
      remat="auto"), vocab="lumos")  # the fastest policy whose step fits the device (compiled
  # once per candidate at start: model.REMAT_POLICIES, fastest first)
  cfg.steps = 100_000
  cfg.checkpoint_every = 1000
  cfg.optim.update(lr=5e-5, min_lr=5e-5, warmup_steps=250, schedule="constant")
  # 32 loss chunks of 1,024 positions instead of 128 of 256: a quarter of the loop iterations
  # for +0.07 GiB of temporaries (AOT memory_analysis at 1B); the GPU's speed-up is not measured.
  cfg.loss_chunk = 1024
  cfg.data.update(kind="records", seq_len=32_768, batch_size=8, max_frames=7)
  return cfg
