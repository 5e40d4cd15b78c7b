"""The decoder: KV-cache equivalence, remat policies, sharded = single-device, parameter counts."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import VOCAB, random_packed_batch
from lumos_jax import config, loss, sharding, tokens
from lumos_jax.model import REMAT_POLICIES, Decoder

TINY = config.model_config(config.load("tiny"))


def _batch(seed=0, b=4, length=96):
  ids, lay = random_packed_batch(np.random.default_rng(seed), b, length)
  return (jnp.asarray(ids), jnp.asarray(lay["positions"]), jnp.asarray(lay["k_start"]),
          jnp.asarray(lay["k_end"])), lay


def _sequence(seed=3):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, VOCAB.visual_size, size=(3, 3, 4))
  ids = tokens.build(rng.integers(100, 300, size=5), frames, fps=8, duration=1, vocab=VOCAB)
  return ids, tokens.parse(ids, VOCAB)


def test_suffix_against_prefix_cache_equals_full_forward():
  model = Decoder(TINY, rngs=nnx.Rngs(0))
  ids, lay = _sequence()
  arr = lambda x: jnp.asarray(x)[None]
  full = model.logits(model(arr(ids), arr(lay.positions), arr(lay.k_start), arr(lay.k_end)))
  frame_ends = np.flatnonzero(ids == VOCAB.image_end) + 1
  cuts = [0, int(frame_ends[0]), int(frame_ends[1]), len(ids)]  # prefix | frame 1 | rest
  cache = model.init_cache(1, len(ids) + 8)
  pieces = []
  for lo, hi in zip(cuts[:-1], cuts[1:]):
    sl = slice(lo, hi)
    hidden, cache = model.extend(cache, arr(ids[sl]), arr(lay.positions[sl]), arr(lay.k_start[sl]),
                                 arr(lay.k_end[sl]))
    pieces.append(model.logits(hidden))
    assert int(cache["length"]) == hi
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_extend_without_write_keeps_cache():
  model = Decoder(TINY, rngs=nnx.Rngs(0))
  ids, lay = _sequence()
  arr = lambda x: jnp.asarray(x)[None]
  p = int(np.flatnonzero(ids == VOCAB.image_end)[0]) + 1
  cache = model.init_cache(1, len(ids))
  _, cache = model.extend(cache, arr(ids[:p]), arr(lay.positions[:p]), arr(lay.k_start[:p]),
                          arr(lay.k_end[:p]))
  block = slice(p, int(np.flatnonzero(ids == VOCAB.image_end)[1]) + 1)
  args = (arr(ids[block]), arr(lay.positions[block]), arr(lay.k_start[block]),
          arr(lay.k_end[block]))
  h1, same = model.extend(cache, *args, write=False)
  assert same is cache and int(same["length"]) == p
  h2, written = model.extend(cache, *args)
  np.testing.assert_array_equal(h1, h2)
  assert int(written["length"]) == block.stop


@pytest.mark.parametrize("policy", sorted(set(REMAT_POLICIES) - {"full", "offload"}))
def test_remat_policies_agree(policy):
  """Every policy ("full", TINY's own, is the baseline) gives the same gradients; both attention
  paths (xla with and without per-block checkpoints) are exercised by the policies."""
  args, _ = _batch(1, b=2, length=64)
  base = Decoder(TINY, rngs=nnx.Rngs(0))
  other = Decoder(dataclasses.replace(TINY, remat=policy), rngs=nnx.Rngs(0))

  def grads(model):
    g, st = nnx.split(model)
    return jax.jit(jax.grad(lambda st: jnp.sum(nnx.merge(g, st)(*args) ** 2)))(st)

  # Float32 rounding, to each array's scale: the blocked attention's backward recomputes its
  # probabilities from the log-sum-exp, and whether that meets the forward's own logits or a
  # rematerialised copy changes the last bits (the embedding's gradients reach ~100).
  for a, b in zip(jax.tree.leaves(grads(base)), jax.tree.leaves(grads(other))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(a))))


def test_unrolled_layer_scan_agrees():
  """scan_unroll changes how the layer stack is compiled, not what it computes: the same gradients
  (under TINY's remat) and the same KV-cache path."""
  args, _ = _batch(1, b=2, length=64)
  unrolled_cfg = dataclasses.replace(TINY, scan_unroll=TINY.n_layers)
  base, unrolled = Decoder(TINY, rngs=nnx.Rngs(0)), Decoder(unrolled_cfg, rngs=nnx.Rngs(0))

  def grads(model):
    g, st = nnx.split(model)
    return jax.jit(jax.grad(lambda st: jnp.sum(nnx.merge(g, st)(*args) ** 2)))(st)

  for a, b in zip(jax.tree.leaves(grads(base)), jax.tree.leaves(grads(unrolled))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  ids, lay = _sequence()
  whole = tuple(jnp.asarray(x)[None] for x in (ids, lay.positions, lay.k_start, lay.k_end))
  outs = [m.extend(m.init_cache(1, len(ids)), *whole) for m in (base, unrolled)]
  np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(outs[0][1]["k"], outs[1][1]["k"], rtol=1e-5, atol=1e-6)


def _loss_fn(graphdef, args, lay):
  targets = args[0]
  weights = jnp.asarray(lay["code"], jnp.float32)

  def f(state):
    model = nnx.merge(graphdef, state)
    hidden = model(*args)
    return loss.chunked(hidden, model.head_visual[...], targets, weights,
                        visual_offset=VOCAB.visual_offset, chunk=32)[0]
  return f


def test_sharded_forward_backward_equals_single_device():
  assert jax.device_count() == 8, "needs 8 (forced CPU) devices"
  args, lay = _batch(2, b=4, length=96)
  graphdef, state = nnx.split(Decoder(TINY, rngs=nnx.Rngs(0)))
  f = _loss_fn(graphdef, args, lay)
  single = jax.jit(jax.value_and_grad(f))(jax.device_put(state, jax.devices()[0]))

  mesh = sharding.make_mesh((2, 2, 2))
  param_sh = sharding.named_shardings(sharding.param_specs(state, mesh), mesh)
  batch_sh = jax.tree.map(
      lambda x: jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, x.ndim)), args)
  with jax.set_mesh(mesh):
    sharded_state = jax.device_put(state, param_sh)
    sharded_args = jax.device_put(args, batch_sh)
    f_sharded = _loss_fn(graphdef, sharded_args, lay)
    step = jax.jit(jax.value_and_grad(f_sharded), in_shardings=(param_sh,),
                   out_shardings=(None, param_sh))
    value, grads = step(sharded_state)
  wq = grads["blocks"]["attn"]["wq"]
  assert wq.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len(wq.sharding.device_set) == 8
  np.testing.assert_allclose(value, single[0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(single[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _param_count(name):
  cfg = config.model_config(config.load(name))
  state = nnx.state(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))), nnx.Param)
  return sum(x.size for x in jax.tree.leaves(state)), cfg


@pytest.mark.parametrize("name", ["lumos_1b", "lumos_3b"])
def test_parameter_count_matches_formula(name):
  n, c = _param_count(name)
  per_layer = (c.d_model * c.head_dim * (2 * c.n_heads + 2 * c.n_kv_heads)
               + 3 * c.d_model * c.mlp_dim + 2 * c.d_model + 4 * c.head_dim)
  assert n == c.n_layers * per_layer + 2 * c.vocab_size * c.d_model + c.d_model
  assert {"lumos_1b": 1.50e9, "lumos_3b": 3.61e9}[name] == pytest.approx(n, rel=0.01)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="n_kv_heads"):
    dataclasses.replace(TINY, n_kv_heads=3)
  with pytest.raises(ValueError, match="model.remat"):
    dataclasses.replace(TINY, remat="sometimes")
  with pytest.raises(ValueError, match="model.scan_unroll=0"):
    dataclasses.replace(TINY, scan_unroll=0)
  cfg = config.load("tiny")
  cfg.model.vocab_size = 500
  with pytest.raises(ValueError, match="model.vocab_size=500"):
    config.model_config(cfg)
  cfg = config.load("tiny")
  cfg.model.visual_offset = 300
  with pytest.raises(ValueError, match="model.visual_offset=300"):
    config.model_config(cfg)


def test_bfloat16_compute_keeps_float32_params():
  args, _ = _batch(4, b=2, length=96)
  model32 = Decoder(TINY, rngs=nnx.Rngs(0))
  model16 = Decoder(dataclasses.replace(TINY, dtype="bfloat16"), rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model16, nnx.Param)))
  h32, h16 = model32(*args), model16(*args)
  assert h16.dtype == jnp.bfloat16
  err = float(jnp.max(jnp.abs(h16.astype(jnp.float32) - h32)))
  assert err < 0.1 * float(jnp.max(jnp.abs(h32))), err
