"""The demo: a small Lumos decoder learning the embedded synthetic shape videos on a CPU.

Data: 2,000 generated videos (a coloured shape moving left/right/up/down, 4 frames of 24 x 24 px:
6 x 6 latents, 220 tokens at most with the compact vocabulary and byte-level captions), written
into WORKDIR/data on the first run (see below). Model: 4 layers, d 128, 4 heads / 2 KV heads of
32, MM-RoPE with strides (1, 16, 16) (see below); no rematerialisation (tiny activations); the 4
layers unrolled (`model.scan_unroll`: 2.35 instead of 1.9 steps/s on 2 cores, README "Demo
run"); bfloat16 matmuls (see below); per-frame masking (see below).
2,400 steps of batch 8: on the same number of tokens, twice the steps of half the batch reached
eval loss 0.688 instead of 0.843 in the same wall time (README, "Demo run": each lever measured).

Run: launch/demo.sh (train, sample with top-k 1, guidance 1.5 and the empty patch's logit +0.6,
     evaluate; 2 CPU devices and huge pages) or, training alone,
     XLA_FLAGS=--xla_force_host_platform_device_count=2 \
       python -m lumos_jax.train --config=configs/demo.py --workdir=/tmp/lumos_demo
     (on a single CPU device the bfloat16 step takes ~750 ms instead of ~140 unless XLA_FLAGS also
     holds --xla_cpu_experimental_ynn_fusion_type=dot: 160-188 ms; README "Demo run")
"""
from lumos_jax import config
from lumos_jax.synthetic import dataset as synthetic

# 4 frames of 24 px (6 x 6 latents), not the generator's 8 of 32 (8 x 8): 220 instead of 644
# tokens. Against 4 frames cut from the 8 of 32 px (1,100 steps in the same time), over two
# training seeds (two sampling seeds each): shape 0.57 vs 0.36, colour 1.00 vs 0.98, direction
# 0.95 vs 0.66, temporal consistency 0.38 vs 0.40 (README "Demo run"). With 8 frames a step took
# twice as long for a shape drawn in the first frame.
VIDEO = synthetic.SyntheticConfig(frame_px=24, frames=4)


def get_config():
  cfg = config.base(dict(vocab_size=840, visual_offset=328, d_model=128, n_layers=4, n_heads=4,
                         n_kv_heads=2, head_dim=32, mlp_dim=384, attention_block_q=128,
                         remat="none", scan_unroll=4, dtype="bfloat16"),
                    vocab="compact")
  # bfloat16 compute (parameters, optimizer state, softmax and loss stay float32): the 2-core
  # host has AVX512-BF16, and the step's matmuls take half the time (a profiled step: 47 instead
  # of 96 ms per device); steps/s 5.8-6.4 instead of 3.9-4.4 (README "Demo run"). The longer
  # training is what brings temporal consistency: in a 4,800-step float32 run the samples kept
  # their shape from frame to frame only from about step 2,000 ("How much training").
  # What fits the first command's 10 minutes with the sample and evaluation. A checkpoint and an
  # evaluation together cost ~1.2 s: every 100 steps they would take 29 s of the ~8 minutes.
  cfg.steps = 2400
  cfg.checkpoint_every = 400
  cfg.log_every = 10
  cfg.eval_every = 400
  cfg.eval_batches = 2
  cfg.mesh = (-1, 1, 1)
  # Cosine to 1e-3 (half the peak), not 1e-4, which spent the last third of these short runs at
  # a small step size and drew less temporally consistent models. Over training seeds 0-2 x two
  # sampling seeds (2026-11-29): temporal 0.59-0.85 (mean 0.70) instead of 0.48-0.84 (0.64),
  # shape 0.75-0.92 instead of 0.68-0.90, objects 1.16-1.39x their area instead of 0.97-1.34x
  # (README "Demo run").
  cfg.optim.update(lr=2e-3, min_lr=1e-3, warmup_steps=30, schedule="cosine", weight_decay=0.0)
  cfg.data.update(kind="synthetic", batch_size=8, strides=(1, 16, 16))
  synthetic.use_geometry(cfg, VIDEO)  # seq_len 224 (the longest video, 220), max_lookahead 45
  # MM-RoPE positions advance 16 per latent row and column (one per frame). At head_dim 32 the
  # meta-group gives each spatial axis 6 frequencies, the highest 0.1 (rows) and 0.032 (columns)
  # rad per position, so with (1, 4, 4) neighbouring columns differed by 0.13 rad and the model
  # barely told them apart; (1, 16, 16) makes that 1.6 rad per row and 0.51 per column. Over
  # three training seeds: shape 0.24 vs 0.16, colour 0.58 vs 0.51, direction 0.78 vs 0.74,
  # temporal consistency 0.25 vs 0.16 (README "Demo run"). On one seed, (1, 8, 8) gained less
  # and (1, 32, 32) lost.
  # The empty patch (code 0, ~80% of the masked slots) counts 0.4 in the loss. Over three
  # training seeds (two sampling seeds each) against weight 1: shape 0.33 vs 0.24, colour 0.95 vs
  # 0.58, direction 0.83 vs 0.78, temporal consistency 0.35 vs 0.25 (README "Demo run"). It also
  # moves the empty patch's logit by about log 0.4, which undoes the erosion of objects that
  # sampling code by code causes (`--code_bias` does only that, at sampling, and gained less).
  # Its eval loss is weighted too, so it does not compare with weight-1 runs.
  cfg.data.update(background_code=0, background_weight=0.4)
  # No masking floor (official: 0.7), so that training also shows the lightly masked frames the
  # last MaskGIT steps of every frame see. In two 300-step runs scored by `evaluate` (16 videos)
  # the run without the floor moved its object the captioned way in 9/16 videos, with it 4/16.
  cfg.data.mask.min_ratio = 0.0
  # Per-frame masking (an independent ratio and pattern per frame, diffusion-forcing style), not
  # the paper's tube: at 600 steps the tube-masked model drew scattered fragments, this one compact
  # objects that move: over 64 held-out videos (two sampling seeds) direction 0.66 vs 0.47,
  # trajectory error 4.0 vs 8.5 px, shape 0.12 vs 0.04, colour 0.66 vs 0.74 (README "Demo run";
  # one training seed: other seeds of this recipe span colour 0.30-0.66, temporal 0.08-0.32).
  # The 1B/3B configs keep the tube mask. data.mask.history_prob (history frames at the sampler's
  # 0.7) stays 0: over three training seeds it did not help.
  cfg.data.mask.kind = "per_frame"
  return cfg
