"""The Lumos decoder in Flax NNX: Llama/Chameleon blocks with QK-LayerNorm, GQA, SwiGLU and MM-RoPE.

  embed -> N x [x + attn(rmsnorm(x)); x + swiglu(rmsnorm(x))] -> rmsnorm -> hidden [B, L, d]
  logits = hidden @ [head_text | head_visual] (untied; split at the first visual id, so AR-DF
           training, which only scores visual ids, never touches or slices the text columns)

Layers are created with `nnx.vmap` and applied with `nnx.scan` (one compiled layer body, parameters
stacked on a leading "layers" axis; `scan_unroll` layers per iteration) under a named remat policy.
Parameters are float32; matmuls run in `cfg.dtype`. Every parameter carries logical axis names
(see sharding.RULES).

Two ways to run it:
  model(ids, positions, k_start, k_end) -> hidden            training / full recomputation
  model.extend(cache, ids, positions, k_start, k_end)        new tokens against a KV cache
The cache is a dict {"k", "v": [n_layers, B, S, Hkv, D], "length": int32 []}; `init_cache` makes an
empty one, `extend` writes the new tokens' keys/values at [length, length + n) and returns the new
cache (pass `write=False` to get the hidden states only: the sampler's decoding steps).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from lumos_jax import attention, rope, tokens
from lumos_jax.sharding import constrain

_cp = jax.checkpoint_policies


@dataclasses.dataclass(frozen=True)
class Remat:
  """A rematerialisation policy: what a layer's backward pass keeps of its forward pass, and
  whether attention reruns each query block's forward in the backward pass.

  layer:  None = the layer is not wrapped (everything it needs is kept); else a
          jax.checkpoint policy for `nnx.remat` of the whole layer.
  attention_blocks: the `xla`/`xla_scan` paths rerun each query block's forward in the backward
          pass instead of keeping its output and log-sum-exp (other implementations ignore it).
          Their backward recomputes the probabilities anyway (flash-style, `attention.
          _flash_attention`), so this saves only [heads, block_q, head_dim] per block; it was
          the [heads, block_q, keys] probabilities before 2026-11-29. Where the layer itself is
          rematerialised it reruns attention a second time; only the least-memory policy
          combines both.
  """
  layer: object
  attention_blocks: bool
  about: str
  backends: tuple[str, ...] = ()  # where it compiles; () = everywhere

  def runs_on(self, backend: str) -> bool:
    """Whether this policy compiles on `backend` ("cpu", "gpu", "tpu")."""
    return not self.backends or backend in self.backends


# Ordered fastest first, as measured by benchmarks/bench_small.py (README, "Rematerialisation";
# since the blocked attention's flash backward, 2026-11-29, `attn_out` and `layer` before
# `attention_blocks` and `dots`, whose backward reruns attention's forward, PV included):
# remat="auto" takes the first one whose compiled step fits the memory budget.
REMAT_POLICIES = {
    "none": Remat(None, False, "keep everything: fastest, most memory"),
    "dots_attn_out": Remat(_cp.save_from_both_policies(
        _cp.dots_with_no_batch_dims_saveable, _cp.save_only_these_names("attn_out")), False,
        "keep the weight matmuls and the attention output (MaxText's minimal_with_context)"),
    "attn_out": Remat(_cp.save_only_these_names("attn_out"), False, "keep the attention output"),
    "layer": Remat(_cp.nothing_saveable, False, "recompute each layer once"),
    "attention_blocks": Remat(None, True, "keep the layer, rerun each attention block's forward"),
    "dots": Remat(_cp.dots_with_no_batch_dims_saveable, False, "keep the weight matmuls"),
    "full": Remat(_cp.nothing_saveable, True, "recompute each layer, and attention inside it "
                  "again: least memory"),
    "offload": Remat(_cp.offload_dot_with_no_batch_dims("device", "pinned_host"), False,
                     "weight matmul outputs to host memory", backends=("gpu", "tpu")),
}
REMAT_NAMES = tuple(REMAT_POLICIES) + ("auto",)  # auto: resolved by train.step.choose_remat


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder shape and numerics. Built from a config's `model` field by `from_config`."""
  vocab_size: int
  visual_offset: int  # first visual id: head_text has this many columns, head_visual the rest
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_variant: str = "mm"
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  dtype: str = "float32"  # compute dtype
  remat: str = "full"
  attention: str = "xla"
  attention_block_q: int = 256
  # Keys a query may see past itself: the longest frame block - 1. Default: 384p video
  # (672 x 384 px = 84 x 48 latents, 4,084-token blocks).
  max_lookahead: int = tokens.frame_block_length(48, 84) - 1
  init_std: float = 0.02
  # Layers per iteration of the layer scan; n_layers unrolls the whole stack. A small model on a
  # CPU runs faster unrolled: the scan copies each layer's slice of the stacked parameters and
  # gradients, and XLA schedules and fuses across unrolled layers (the demo: README "Demo run").
  # Compile time grows with it; the parameters stay stacked either way.
  scan_unroll: int = 1

  def __post_init__(self):
    if not 1 <= self.scan_unroll <= self.n_layers:
      raise ValueError(f"model.scan_unroll={self.scan_unroll}: expected 1 .. model.n_layers="
                       f"{self.n_layers} (layers per iteration of the layer scan)")
    rope.check_head_dim(self.head_dim, self.rope_variant)
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"model.n_heads={self.n_heads} must be a multiple of "
                       f"model.n_kv_heads={self.n_kv_heads} (grouped-query attention)")
    if not 0 < self.visual_offset < self.vocab_size:
      raise ValueError(f"model.visual_offset={self.visual_offset} must lie inside the vocabulary "
                       f"(model.vocab_size={self.vocab_size})")
    if self.remat not in REMAT_NAMES:
      raise ValueError(f"model.remat={self.remat!r}: choose one of {sorted(REMAT_NAMES)}")
    if self.attention not in attention.NAMES:
      raise ValueError(f"model.attention={self.attention!r}: choose one of "
                       f"{sorted(attention.NAMES)}")

  @classmethod
  def from_config(cls, cfg) -> ModelConfig:
    return cls(**dict(cfg))


def _param(rngs, shape, names, std):
  init = nnx.initializers.normal(std) if std else nnx.initializers.ones
  return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=names,
                   eager_sharding=False)


class RMSNorm(nnx.Module):
  """RMSNorm in float32, cast back, then times the weight (as the official model)."""

  def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
    self.weight = _param(rngs, (dim,), ("norm",), None)
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return y.astype(x.dtype) * self.weight[...].astype(x.dtype)


class QKNorm(nnx.Module):
  """LayerNorm over head_dim (eps 1e-5), one weight/bias [head_dim] shared by all heads."""

  def __init__(self, head_dim: int, *, rngs: nnx.Rngs):
    self.weight = _param(rngs, (head_dim,), ("head_dim",), None)
    self.bias = nnx.Param(jnp.zeros((head_dim,), jnp.float32), out_sharding=("head_dim",),
                          eager_sharding=False)

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5) * self.weight[...] + self.bias[...]
    return y.astype(x.dtype)


class Attention(nnx.Module):
  """q/k/v/o projections without bias, GQA, QK-LayerNorm before RoPE."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, hq, hkv, hd, std = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.init_std
    self.wq = _param(rngs, (d, hq, hd), ("embed", "q_heads", "head_dim"), std)
    self.wk = _param(rngs, (d, hkv, hd), ("embed", "kv_heads", "head_dim"), std)
    self.wv = _param(rngs, (d, hkv, hd), ("embed", "kv_heads", "head_dim"), std)
    self.wo = _param(rngs, (hq, hd, d), ("q_heads", "head_dim", "embed"), std)
    self.q_norm = QKNorm(hd, rngs=rngs)
    self.k_norm = QKNorm(hd, rngs=rngs)
    self.cfg = cfg

  def __call__(self, x_bld, angles_blf, k_start, k_end, kv_cache=None, plan=None):
    """x [B, L, d] -> ([B, L, d], (k, v)): k/v are this call's keys/values, or the updated cache
    buffers [B, S, Hkv, D] when `kv_cache = (k_buf, v_buf, offset)` is given. `plan`: the static
    attention plan of this batch, for the band-wise kernels (attention.NEEDS_PLAN)."""
    cfg, dt = self.cfg, x_bld.dtype
    q = jnp.einsum("bld,dhk->blhk", x_bld, self.wq[...].astype(dt))
    k = jnp.einsum("bld,dhk->blhk", x_bld, self.wk[...].astype(dt))
    v = jnp.einsum("bld,dhk->blhk", x_bld, self.wv[...].astype(dt))
    q = rope.apply(self.q_norm(q), angles_blf)
    k = rope.apply(self.k_norm(k), angles_blf)
    if kv_cache is not None:
      k_buf, v_buf, offset = kv_cache
      k = jax.lax.dynamic_update_slice_in_dim(k_buf, k.astype(k_buf.dtype), offset, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(v_buf, v.astype(v_buf.dtype), offset, axis=1)
    remat = REMAT_POLICIES.get(cfg.remat)
    out = attention.attend(q, k.astype(dt), v.astype(dt), k_start, k_end, impl=cfg.attention,
                           plan=plan, block_q=cfg.attention_block_q,
                           max_lookahead=cfg.max_lookahead,
                           remat_blocks=remat is None or remat.attention_blocks)
    out = checkpoint_name(out, "attn_out")
    return jnp.einsum("blhk,hkd->bld", out, self.wo[...].astype(dt)), (k, v)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), no bias."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f, std = cfg.d_model, cfg.mlp_dim, cfg.init_std
    self.w_gate = _param(rngs, (d, f), ("embed", "mlp"), std)
    self.w_up = _param(rngs, (d, f), ("embed", "mlp"), std)
    self.w_down = _param(rngs, (f, d), ("mlp", "embed"), std)

  def __call__(self, x):
    """x [..., d] -> [..., d]. Gate and up are one matmul over their stacked weights [d, 2, f]:
    its backward makes one input gradient and one weight gradient instead of two each (on CPU,
    bench_small's MLP forward+backward 0.96 -> 0.65-0.70 s per layer, 2026-11-29); the
    parameters stay two, as checkpoints and the official weights have them."""
    dt = x.dtype
    w_gate_up = jnp.stack([self.w_gate[...], self.w_up[...]], axis=1).astype(dt)
    gate_up = jnp.einsum("...d,dtf->...tf", x, w_gate_up)
    return (jax.nn.silu(gate_up[..., 0, :]) * gate_up[..., 1, :]) @ self.w_down[...].astype(dt)


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, angles, k_start, k_end, kv_cache=None, plan=None):
    attn_out, kv = self.attn(self.attn_norm(x), angles, k_start, k_end, kv_cache, plan)
    x = x + attn_out
    x = x + self.mlp(self.mlp_norm(x))
    return constrain(x, ("act_batch", "act_len", "act_embed")), kv


class Decoder(nnx.Module):
  """The Lumos decoder. See the module docstring for the two ways to call it."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.init_std)

    @nnx.split_rngs(splits=cfg.n_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return Block(cfg, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, rngs=rngs)
    self.head_text = _param(rngs, (cfg.d_model, cfg.visual_offset), ("embed", "vocab"),
                            cfg.init_std)
    self.head_visual = _param(rngs, (cfg.d_model, cfg.vocab_size - cfg.visual_offset),
                              ("embed", "vocab"), cfg.init_std)

  def _run(self, ids, positions, k_start, k_end, cache=None, plan=None):
    """Shared body: embed, scan the blocks (with cache buffers as per-layer inputs), final norm."""
    cfg = self.cfg
    x = jnp.take(self.embed[...], ids, axis=0).astype(cfg.dtype)
    x = constrain(x, ("act_batch", "act_len", "act_embed"))
    angles = rope.angles(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_variant)
    # "auto" is resolved by the trainer before it differentiates (train.step.choose_remat); a
    # forward pass alone keeps nothing for a backward pass, so no policy matters there.
    remat = REMAT_POLICIES.get(cfg.remat)
    if remat is not None and not remat.runs_on(jax.default_backend()):
      raise ValueError(f"model.remat={cfg.remat!r} needs a {' or '.join(remat.backends)} "
                       f"backend, not {jax.default_backend()!r}")

    def layer(block, x, kv_cache):
      return block(x, angles, k_start, k_end, kv_cache, plan)

    if remat is not None and remat.layer is not None:
      layer = nnx.remat(layer, policy=remat.layer)

    if cache is None:
      @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry, unroll=cfg.scan_unroll,
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def scan_plain(block, x):
        return layer(block, x, None)[0]
      return self.final_norm(scan_plain(self.blocks, x)), None

    offset = cache["length"]

    @nnx.scan(in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0, 0), unroll=cfg.scan_unroll,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def scan_cached(block, x, k_buf, v_buf):
      x, (k_buf, v_buf) = layer(block, x, (k_buf, v_buf, offset))
      return x, k_buf, v_buf

    x, k_all, v_all = scan_cached(self.blocks, x, cache["k"], cache["v"])
    new_cache = {"k": k_all, "v": v_all, "length": offset + ids.shape[1]}
    return self.final_norm(x), new_cache

  def __call__(self, ids_bl, positions_bl3, k_start_bl, k_end_bl, plan=None):
    """ids int [B, L], positions int [B, L, 3], key ranges int [B, L] -> hidden [B, L, d].
    `plan`: attention_plan.plan_of(k_start, k_end) for the band-wise kernels (static)."""
    return self._run(ids_bl, positions_bl3, k_start_bl, k_end_bl, plan=plan)[0]

  def logits(self, hidden_bld):
    """Full-vocabulary logits in float32 [B, L, vocab]. Training never calls this (see loss.py)."""
    head = jnp.concatenate([self.head_text[...], self.head_visual[...]], axis=1)
    return jnp.einsum("bld,dv->blv", hidden_bld, head.astype(hidden_bld.dtype),
                      preferred_element_type=jnp.float32)

  def init_cache(self, batch: int, size: int, dtype=None) -> dict:
    """An empty KV cache for `size` tokens."""
    cfg = self.cfg
    shape = (cfg.n_layers, batch, size, cfg.n_kv_heads, cfg.head_dim)
    dtype = dtype or cfg.dtype
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
            "length": jnp.zeros((), jnp.int32)}

  def extend(self, cache, ids_bn, positions_bn3, k_start_bn, k_end_bn, *, write: bool = True):
    """Runs n new tokens (absolute indices length .. length+n-1) against the cache.

    Key ranges are absolute key indices into the cache buffer; keys beyond `length + n` must lie
    outside every range. Returns (hidden [B, n, d], cache with the new keys/values if `write`,
    else the cache unchanged).
    """
    hidden, new_cache = self._run(ids_bn, positions_bn3, k_start_bn, k_end_bn, cache)
    return hidden, (new_cache if write else cache)


def init_model(cfg: ModelConfig, seed: int):
  """(graphdef, params State) of a freshly initialised decoder."""
  return nnx.split(Decoder(cfg, rngs=nnx.Rngs(seed)))


def abstract_model(cfg: ModelConfig):
  """(graphdef, abstract params State with logical sharding metadata): nothing is allocated."""
  return nnx.split(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
