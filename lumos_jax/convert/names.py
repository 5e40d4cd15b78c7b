"""The official (Hugging Face Chameleon / Lumos-1) tensor names and layouts against our parameters.

Our parameters (lumos_jax.model, layers stacked on a leading axis) and the official tensors:

  ours                                  official (torch Linear weights are [out, in])
  embed [V, d]                          model.embed_tokens.weight [V, d]
  blocks.attn.wq [L, d, Hq, D]          model.layers.N.self_attn.q_proj.weight [Hq*D, d]
  blocks.attn.wk / wv [L, d, Hkv, D]    ...k_proj.weight / v_proj.weight [Hkv*D, d]
  blocks.attn.wo [L, Hq, D, d]          ...o_proj.weight [d, Hq*D]
  blocks.attn.q_norm.{weight,bias} [L, D]  ...q_norm.{weight,bias}: [R, D], R = 1 (official code:
                                        model_parallel_size = 1) or Hq (transformers' Chameleon);
                                        all rows must be equal: we keep one set shared by all heads
  blocks.attn.k_norm.{weight,bias} [L, D]  ...k_norm.{weight,bias}: [R, D], R = 1 or Hkv
  blocks.attn_norm.weight [L, d]        ...input_layernorm.weight [d]
  blocks.mlp_norm.weight [L, d]         ...post_attention_layernorm.weight [d]
  blocks.mlp.w_gate / w_up [L, d, F]    ...mlp.gate_proj.weight / up_proj.weight [F, d]
  blocks.mlp.w_down [L, F, d]           ...mlp.down_proj.weight [d, F]
  final_norm.weight [d]                 model.norm.weight [d]
  head_text [d, off], head_visual [d, V-off]   lm_head.weight [V, d] (rows split at off)

No permutation of q/k rows: our RoPE pairs channel i with i + D/2 ("rotate half"), exactly as the
official model and transformers' Chameleon do (tests/unit/test_convert.py checks the forward).
Export writes q/k norms in transformers' [heads, D] shape (the rows repeated), which the official
code does not load as is (it wants [1, D]: take row 0).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# Tensors of the Chameleon checkpoint format that Lumos-1 does not use (the official code deletes
# the VQGAN before training): skipped on import with a log line.
SKIPPED_PREFIXES = ("model.vqmodel.",)


@dataclasses.dataclass(frozen=True)
class Kind:
  """One parameter of ours: its path, shape, and how it maps to official tensors.

  per_layer: the official tensors are model.layers.N.<hf> for N in range(n_layers), stacked on
  our leading layers axis; otherwise one official tensor named `hf`.
  to_ours(official array) -> our array (one layer's slice for per-layer kinds).
  to_hf(our array, one layer's slice) -> the official array.
  """
  path: tuple[str, ...]
  hf: str
  shape: tuple[int, ...]  # ours, without the layers axis
  hf_shapes: tuple[tuple[int, ...], ...]  # accepted official shapes; the first is written
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  per_layer: bool = True

  @property
  def name(self) -> str:
    return ".".join(self.path)


def _linear(d_in: int, out: tuple[int, ...]):
  """(to_ours, to_hf) of a torch Linear weight [prod(out), d_in] <-> ours [d_in, *out]."""
  return (lambda w: np.ascontiguousarray(w.T).reshape(d_in, *out),
          lambda p: np.ascontiguousarray(p.reshape(d_in, -1).T))


def _linear_in(inp: tuple[int, ...], d_out: int):
  """(to_ours, to_hf) of a torch Linear weight [d_out, prod(inp)] <-> ours [*inp, d_out]."""
  return (lambda w: np.ascontiguousarray(w.T).reshape(*inp, d_out),
          lambda p: np.ascontiguousarray(p.reshape(-1, d_out).T))


def _shared_rows(rows_out: int):
  """(to_ours, to_hf) of a QK-norm vector shared by all heads: official [R, D] (all rows equal)
  or [D] -> ours [D]; ours -> [rows_out, D] (transformers' Chameleon shape)."""
  def to_ours(w):
    w = np.asarray(w)
    if w.ndim == 2 and not np.all(w == w[:1]):
      raise ValueError(f"its {w.shape[0]} rows (one per head or model-parallel shard) "
                       "differ; lumos_jax shares one QK-norm weight and bias across heads and "
                       "cannot represent per-head values")
    return np.array(w.reshape(-1, w.shape[-1])[0])
  return to_ours, lambda p: np.ascontiguousarray(np.broadcast_to(p, (rows_out, p.shape[-1])))


def kinds(m) -> list[Kind]:
  """Every parameter of a ModelConfig `m`, in the order the official checkpoints list them."""
  d, hq, hkv, hd, f = m.d_model, m.n_heads, m.n_kv_heads, m.head_dim, m.mlp_dim
  same = (lambda w: w, lambda p: p)  # the arrays passed in are fresh copies already
  out = [Kind(("embed",), "model.embed_tokens.weight", (m.vocab_size, d),
              ((m.vocab_size, d),), *same, per_layer=False)]
  for ours, hf, heads in (("wq", "q_proj", hq), ("wk", "k_proj", hkv), ("wv", "v_proj", hkv)):
    out.append(Kind(("blocks", "attn", ours), f"self_attn.{hf}.weight", (d, heads, hd),
                    ((heads * hd, d),), *_linear(d, (heads, hd))))
  out.append(Kind(("blocks", "attn", "wo"), "self_attn.o_proj.weight", (hq, hd, d),
                  ((d, hq * hd),), *_linear_in((hq, hd), d)))
  for norm, heads in (("q_norm", hq), ("k_norm", hkv)):
    for part in ("weight", "bias"):
      hf = f"self_attn.{norm}.{part}"
      out.append(Kind(("blocks", "attn", norm, part), hf, (hd,),
                      ((heads, hd), (1, hd), (hd,)), *_shared_rows(heads)))
  for ours, hf in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
    out.append(Kind(("blocks", ours, "weight"), f"{hf}.weight", (d,), ((d,),), *same))
  for ours, hf in (("w_gate", "gate_proj"), ("w_up", "up_proj")):
    out.append(Kind(("blocks", "mlp", ours), f"mlp.{hf}.weight", (d, f), ((f, d),),
                    *_linear(d, (f,))))
  out.append(Kind(("blocks", "mlp", "w_down"), "mlp.down_proj.weight", (f, d), ((d, f),),
                  *_linear_in((f,), d)))
  out.append(Kind(("final_norm", "weight"), "model.norm.weight", (d,), ((d,),), *same,
                  per_layer=False))
  return out


def layer_name(kind: Kind, layer: int) -> str:
  return f"model.layers.{layer}.{kind.hf}"


def official_names(m) -> dict[str, tuple[tuple[int, ...], ...]]:
  """{official tensor name: accepted shapes} of every tensor an official checkpoint of `m` has."""
  names = {}
  for kind in kinds(m):
    if kind.per_layer:
      names.update({layer_name(kind, n): kind.hf_shapes for n in range(m.n_layers)})
    else:
      names[kind.hf] = kind.hf_shapes
  names[LM_HEAD] = ((m.vocab_size, m.d_model),)
  return names


LM_HEAD = "lm_head.weight"  # [V, d]: our head_text = rows [0, off) transposed, head_visual the rest
