"""A tiny random model written in the official Lumos-1 / Chameleon checkpoint format (config.json +
safetensors), for the conversion tests. No torch: safetensors' numpy writer."""
from __future__ import annotations

import json
import pathlib

import numpy as np
from safetensors.numpy import save_file

from lumos_jax import tokens

# 2 layers, d 64, 2 heads of 32 (MM-RoPE needs head_dim % 32 == 0; transformers' Chameleon needs
# head_dim = hidden / heads), 1 KV head, the official 129,536-id vocabulary.
TINY = {"architectures": ["ChameleonXLLMXForConditionalGeneration"], "model_type": "chameleon",
        "vocab_size": tokens.LUMOS.size, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "model_parallel_size": 1, "swin_norm": False,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "mm_rope": True, "torch_dtype": "bfloat16"}


def tensors(cfg: dict, seed: int = 0, qk_rows: str = "shard") -> dict[str, np.ndarray]:
  """Random float32 tensors of an official checkpoint of `cfg`. qk_rows: "shard" ([1, D], the
  official code) or "heads" ([heads, D], transformers' Chameleon; equal rows)."""
  rng = np.random.default_rng(seed)
  d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
  hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
  hd = d // hq
  w = lambda *shape, s=0.05: (rng.standard_normal(shape) * s).astype(np.float32)
  out = {"model.embed_tokens.weight": w(v, d, s=1.0), "model.norm.weight": 1 + w(d),
         "lm_head.weight": w(v, d)}
  for n in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{n}."
    out.update({p + "self_attn.q_proj.weight": w(hq * hd, d, s=0.2),
                p + "self_attn.k_proj.weight": w(hkv * hd, d, s=0.2),
                p + "self_attn.v_proj.weight": w(hkv * hd, d, s=0.2),
                p + "self_attn.o_proj.weight": w(d, hq * hd, s=0.2),
                p + "mlp.gate_proj.weight": w(f, d, s=0.2),
                p + "mlp.up_proj.weight": w(f, d, s=0.2),
                p + "mlp.down_proj.weight": w(d, f, s=0.2),
                p + "input_layernorm.weight": 1 + w(d, s=0.2),
                p + "post_attention_layernorm.weight": 1 + w(d, s=0.2)})
    for norm, heads in (("q_norm", hq), ("k_norm", hkv)):
      rows = 1 if qk_rows == "shard" else heads
      for part, base in (("weight", 1.0), ("bias", 0.0)):
        out[f"{p}self_attn.{norm}.{part}"] = np.repeat(base + w(1, hd, s=0.3), rows, axis=0)
  return out


def write(hf_dir, cfg: dict = TINY, arrays: dict | None = None, *, shards: int = 1,
          seed: int = 0, qk_rows: str = "shard") -> dict[str, np.ndarray]:
  """Writes config.json and the tensors (split over `shards` files with an index when > 1);
  returns the tensors."""
  hf_dir = pathlib.Path(hf_dir)
  hf_dir.mkdir(parents=True, exist_ok=True)
  arrays = tensors(cfg, seed, qk_rows) if arrays is None else arrays
  (hf_dir / "config.json").write_text(json.dumps(cfg))
  names = sorted(arrays)
  if shards == 1:
    save_file(arrays, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    return arrays
  weight_map = {}
  for i in range(shards):
    file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    part = {n: arrays[n] for n in names[i::shards]}
    save_file(part, str(hf_dir / file), metadata={"format": "pt"})
    weight_map.update({n: file for n in part})
  (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  return arrays
