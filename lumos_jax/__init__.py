"""lumos_jax: Lumos-1-style autoregressive video generation in JAX / Flax NNX.

Modules: `tokens` (vocabularies, sequence layout), `rope` (1-D / 3-D / MM-RoPE), `attention`
(layout-driven attention), `model` (the decoder), `loss` (AR-DF loss), `sharding`, `config`.
"""
from lumos_jax import attention, loss, rope, tokens  # noqa: F401  (re-exported)
