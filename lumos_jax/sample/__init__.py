"""Sampling: the AR-DF sampler, loading a run's parameters, and `python -m lumos_jax.sample`.

Imports nothing of `lumos_jax.train` (inference stands apart from training).

  from lumos_jax import sample
  sampler, cfg, vocab = sample.load("/tmp/lumos_demo")            # params only, latest checkpoint
  codes = sampler.generate(vocab.encode_text("a red circle moves left"),
                           sample.SampleConfig(frames=4, height=6, width=6, steps=16), seed=0)
"""
from lumos_jax.sample.loader import load, synthetic_tokenizer  # noqa: F401  (re-exported)
from lumos_jax.sample.sampler import (  # noqa: F401
    SCHEDULES, SampleConfig, Sampler, parse_code_bias, plan)
