"""The official checkpoint's config.json (transformers' ChameleonConfig, as Lumos-1 / Lumina-mGPT
write it) <-> our run config (lumos_jax.config.base()).

Read from config.json: num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads,
head_dim (else hidden_size / num_attention_heads, as transformers does), intermediate_size,
vocab_size, rope_theta (or rope_parameters.rope_theta), rms_norm_eps, mm_rope. Fields that change
the computation in ways our decoder does not implement (swin_norm, attention/MLP biases, tied
embeddings, another activation, model_parallel_size > 1 with differing QK-norm rows) are refused.
"""
from __future__ import annotations

import logging

import ml_collections

from lumos_jax import config as config_lib, tokens

log = logging.getLogger("lumos_jax.convert")

# (field, value our decoder implements): anything else is refused.
_FIXED = (("hidden_act", "silu"), ("swin_norm", False), ("attention_bias", False),
          ("mlp_bias", False), ("tie_word_embeddings", False))
VOCAB_KEY = "lumos_jax_vocab"  # written by export: "lumos" or "compact"
ROPE_KEY = "lumos_jax_rope_variant"  # written by export: "mm", "1d" or "3d"


def _require(hf: dict, key: str, source: str):
  if key not in hf:
    raise ValueError(f"{source}: field {key!r} is missing")
  return hf[key]


def _rope(hf: dict, source: str) -> tuple[str, float]:
  """(rope variant, theta). mm_rope absent: MM-RoPE (all released Lumos-1 models use it)."""
  theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
  if ROPE_KEY in hf:
    return hf[ROPE_KEY], float(theta)
  if "mm_rope" not in hf:
    log.warning("%s has no 'mm_rope' field: assuming MM-RoPE (as the released Lumos-1 models)",
                source)
  return ("mm" if hf.get("mm_rope", True) else "1d"), float(theta)


def _vocab(hf: dict, source: str) -> str:
  if VOCAB_KEY in hf:
    return hf[VOCAB_KEY]
  if hf["vocab_size"] == tokens.LUMOS.size:
    return "lumos"
  raise ValueError(f"{source}: vocab_size={hf['vocab_size']} is not the Lumos-1 vocabulary "
                   f"({tokens.LUMOS.size} ids = 65,536 Chameleon + 64,000 Cosmos codes)")


def run_config(hf: dict, source: str) -> ml_collections.ConfigDict:
  """Our run config for an official config.json `hf` (read from `source`, named in errors)."""
  for key, value in _FIXED:
    if hf.get(key, value) != value:
      raise ValueError(f"{source}: {key}={hf[key]!r} is not supported (lumos_jax implements "
                       f"{key}={value!r}, as the Lumos-1 models)")
  req = lambda key: _require(hf, key, source)
  d, heads = req("hidden_size"), req("num_attention_heads")
  variant, theta = _rope(hf, source)
  vocab_name = _vocab({**hf, "vocab_size": req("vocab_size")}, source)
  vocab = config_lib.vocab(ml_collections.ConfigDict({"vocab": vocab_name}))
  cfg = config_lib.base(dict(
      vocab_size=hf["vocab_size"], visual_offset=vocab.visual_offset, d_model=d,
      n_layers=req("num_hidden_layers"), n_heads=heads,
      n_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d // heads, mlp_dim=req("intermediate_size"),
      rope_variant=variant, rope_theta=theta, norm_eps=float(hf.get("rms_norm_eps", 1e-5))),
      vocab=vocab_name)
  # The official recipe: 12 fps x 2 s (7 latent frames) of Cosmos DV4x8x8 codes (strides 4, 8, 8).
  cfg.data.update(kind="records", max_frames=7)
  cfg.data.fps = 12
  config_lib.model_config(cfg)  # raises ValueError for a shape our decoder cannot build
  return cfg


def official_config(cfg) -> dict:
  """A transformers ChameleonConfig dict (config.json) for our run config `cfg`."""
  m, vocab = cfg.model, config_lib.vocab(cfg)
  if m.head_dim * m.n_heads != m.d_model:
    raise ValueError(f"model.head_dim={m.head_dim} x model.n_heads={m.n_heads} != "
                     f"model.d_model={m.d_model}: transformers' Chameleon derives head_dim as "
                     "hidden_size / num_attention_heads, so this model cannot be exported")
  return {
      "architectures": ["ChameleonForConditionalGeneration"], "model_type": "chameleon",
      "vocab_size": m.vocab_size, "hidden_size": m.d_model, "intermediate_size": m.mlp_dim,
      "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
      "num_key_value_heads": m.n_kv_heads, "head_dim": m.head_dim, "hidden_act": "silu",
      "max_position_embeddings": max(int(cfg.data.seq_len), 4096),
      "rms_norm_eps": m.norm_eps, "rope_theta": m.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
      "attention_bias": False, "mlp_bias": False, "model_parallel_size": 1, "swin_norm": False,
      "tie_word_embeddings": False, "bos_token_id": vocab.bos, "pad_token_id": vocab.bos,
      "eos_token_id": vocab.sep,
      "dtype": "float32", "mm_rope": m.rope_variant == "mm",
      ROPE_KEY: m.rope_variant, VOCAB_KEY: cfg.vocab,
      # Chameleon's VQGAN token names (IMGIMG...): none here (Lumos codes are Cosmos ids from
      # 65536), so ChameleonForConditionalGeneration suppresses no logits.
      "vocabulary_map": {},
  }
