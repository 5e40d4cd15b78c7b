"""lumos_jax: Lumos-1-style autoregressive video generation in JAX / Flax NNX.

Modules: `tokens` (vocabularies, sequence layout), `rope` (1-D / 3-D / MM-RoPE), `attention`
(layout-driven attention), `model` (the decoder), `loss` (AR-DF loss), `masking`, `sharding`,
`config`, `checkpoint` (a run's checkpoints, params-only restore). Packages: `train` (the trainer,
`python -m lumos_jax.train`), `sample` (the sampler, `python -m lumos_jax.sample`; never imports
`train`), `data` (records, pipeline, official import, TFDS, `python -m lumos_jax.data`),
`synthetic` (the embedded demo dataset and its evaluation).
"""
from lumos_jax import attention, loss, rope, tokens  # noqa: F401  (re-exported)
