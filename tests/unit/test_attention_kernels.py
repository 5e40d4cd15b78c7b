"""Fused-kernel paths (tokamax, per-band tokamax, per-band cuDNN) equal the dense reference.

On CPU the kernels run their XLA forms (tokamax's "xla" implementation with the same Mask;
jax.nn.dot_product_attention(implementation="xla") for the cuDNN decomposition), which exercise
the same masks, band decomposition and key shifting as on a GPU. Values and gradients against
`dense` on random layouts (packed rows, CFG rows with left padding, 1-frame images, a partial last
frame) and on the official sample layouts.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import VOCAB, random_packed_batch, random_sample
from lumos_jax import attention, attention_plan, tokens
from lumos_jax.data import safe_pickle

pytest.importorskip("tokamax", reason="tokamax (the gpu extra) is not installed")

KERNELS = ("tokamax", "tokamax_bands", "cudnn_bands")


def _cfg_rows(rng):
  """The sampler's two rows: text + frames, and the same frames right-aligned without text."""
  frames = rng.integers(0, VOCAB.visual_size, size=(3, 2, 3))
  text = rng.integers(VOCAB.number_zero + VOCAB.number_count, VOCAB.visual_offset, size=7)
  cond = tokens.parse(tokens.build(text, frames, fps=8, duration=2, vocab=VOCAB), VOCAB)
  uncond = tokens.parse(tokens.build(None, frames, fps=8, duration=2, vocab=VOCAB), VOCAB)
  pad = len(cond) - len(uncond)
  q = np.arange(pad, dtype=np.int32)
  k_start = np.stack([cond.k_start, np.concatenate([q, uncond.k_start + pad])])
  k_end = np.stack([cond.k_end, np.concatenate([q + 1, uncond.k_end + pad])])
  return k_start, k_end


def _packed(rng):
  _, lay = random_packed_batch(rng, 1, 72, max_frames=2, max_hw=3)
  return lay["k_start"], lay["k_end"]


def _image(rng):
  lay = tokens.pad(tokens.parse(random_sample(rng, max_frames=1), VOCAB), 64)
  return lay.k_start[None], lay.k_end[None]


def _partial_last_frame(rng):
  """A sequence cut inside its last frame block: that frame's queries see what exists of it."""
  lay = tokens.parse(random_sample(rng), VOCAB)
  while lay.frame.max() < 1:
    lay = tokens.parse(random_sample(rng), VOCAB)
  cut = int(np.flatnonzero(lay.frame == 1)[0]) + 5
  return lay.k_start[None, :cut], np.minimum(lay.k_end[:cut], cut)[None]


CASES = {"cfg_rows": _cfg_rows, "packed": _packed, "image": _image,
         "partial_last_frame": _partial_last_frame}


def _qkv(rng, b, length, hq=4, hkv=2, d=16):
  shape_q, shape_kv = (b, length, hq, d), (b, length, hkv, d)
  return tuple(jnp.asarray(rng.normal(size=s), jnp.float32)
               for s in (shape_q, shape_kv, shape_kv, shape_q))


def _run(impl, q, k, v, cot, k_start, k_end, plan):
  """(output, sum(output * cot), its gradients w.r.t. q, k, v), one jitted program."""
  def f(q, k, v):
    out = attention.attend(q, k, v, k_start, k_end, impl=impl, plan=plan, kernel_backend="xla")
    return jnp.sum(out * cot), out
  (val, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  return out, val, grads


def _assert_parity(k_start, k_end, rng, hq=4, hkv=2, d=16, tol=2e-5):
  plan = attention_plan.plan_of(k_start, k_end)
  q, k, v, cot = _qkv(rng, *k_end.shape, hq=hq, hkv=hkv, d=d)
  ks, ke = jnp.asarray(k_start), jnp.asarray(k_end)
  ref_out, ref_val, ref_grads = _run("dense", q, k, v, cot, ks, ke, None)
  for impl in KERNELS:
    out, val, grads = _run(impl, q, k, v, cot, ks, ke, plan)
    np.testing.assert_allclose(out, ref_out, atol=tol, rtol=tol, err_msg=impl)
    np.testing.assert_allclose(val, ref_val, rtol=5 * tol, err_msg=impl)  # a sum over L x H x D
    for g, ref in zip(grads, ref_grads):
      np.testing.assert_allclose(g, ref, atol=tol, rtol=tol, err_msg=impl)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernels_equal_dense(case):
  rng = np.random.default_rng(sorted(CASES).index(case))
  _assert_parity(*CASES[case](rng), rng)


def _official(root, kind, cut_frames=None):
  entries = json.loads((root / "pre_tokenize" / "data" / f"test_{kind}" / "merge-record.json")
                       .read_text())
  ids = np.asarray(safe_pickle.load(root / entries[0]["file"])["token"], np.int32)
  if cut_frames:
    ids = tokens.cut_frames(ids, tokens.parse(ids), cut_frames)
  return tokens.parse(ids)


@pytest.mark.parametrize("kind,frames", [("image", None), ("video", 1)])
def test_kernels_equal_dense_on_official_layouts(official_samples, kind, frames):
  lay = _official(official_samples, kind, frames)
  plan = attention_plan.plan_of(lay.k_start, lay.k_end)
  assert sum(b.hi - b.lo for b in plan.bands) == len(lay)
  _assert_parity(lay.k_start[None], lay.k_end[None], np.random.default_rng(7), hq=2, hkv=1, d=8,
                 tol=1e-4)


def test_cudnn_calls_have_even_lengths(monkeypatch):
  """cuDNN (through JAX) refuses a training call of odd length (on an H200: "Unsupported sequence
  length Q 85, KV 85" for the causal text band); every band is padded to even and still equals
  dense. The case has odd bands of every mode: masked, causal from 0, unmasked."""
  seen = []
  real = jax.nn.dot_product_attention

  def spy(q, k, v, **kw):
    seen.append((q.shape[1], k.shape[1], kw["mask"].shape[-2:] if "mask" in kw else None))
    return real(q, k, v, **kw)

  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  rng = np.random.default_rng(0)
  cases = [_packed(rng)]
  for n_text in (6, 7):  # one of them gives an odd causal text band and odd key prefixes
    text = rng.integers(VOCAB.number_zero + VOCAB.number_count, VOCAB.visual_offset, size=n_text)
    frames = rng.integers(0, VOCAB.visual_size, size=(3, 2, 3))
    lay = tokens.parse(tokens.build(text, frames, fps=8, duration=2, vocab=VOCAB), VOCAB)
    cases.append((lay.k_start[None], lay.k_end[None]))
  modes = set()
  for k_start, k_end in cases:
    for b in attention_plan.plan_of(k_start, k_end).bands:
      if (b.hi - b.lo) % 2 or b.key_hi % 2:
        modes.add("masked" if not (b.from_zero and (not b.causal or b.lo == 0))
                  else "causal" if b.causal else "unmasked")
    _assert_parity(k_start, k_end, rng)
  assert modes == {"masked", "causal", "unmasked"}, modes  # the cases test every mode
  assert seen and all(lq % 2 == 0 and lk % 2 == 0 and m in (None, (lq, lk))
                      for lq, lk, m in seen), seen


@pytest.mark.parametrize("impl", ["tokamax", "cudnn"])
def test_cache_attention_equals_dense(impl):
  """A decoding step: the last frame block of both CFG rows against a longer cache buffer."""
  rng = np.random.default_rng(3)
  k_start, k_end = _cfg_rows(rng)
  lo = int(np.flatnonzero(k_end[0] == k_end[0, -2])[0])  # first query of the last frame block
  hi = int(k_end[0, -2])
  size = k_end.shape[1] + 9  # cache slots past the block hold stale values, outside every range
  q, k, v, _ = _qkv(rng, 2, size)
  q, ks, ke = q[:, lo:hi], jnp.asarray(k_start[:, lo:hi]), jnp.asarray(k_end[:, lo:hi])
  ref = attention.attend(q, k, v, ks, ke, impl="dense")
  out = attention.attend(q, k, v, ks, ke, impl=impl, kernel_backend="xla")
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)


def test_band_kernels_refuse_a_missing_plan():
  x = jnp.zeros((1, 4, 2, 8))
  i = jnp.zeros((1, 4), jnp.int32)
  for impl in ("tokamax_bands", "cudnn_bands"):
    with pytest.raises(ValueError, match="needs an attention plan"):
      attention.attend(x, x, x, i, jnp.arange(1, 5)[None], impl=impl, kernel_backend="xla")


def test_auto_resolution(monkeypatch):
  assert attention.resolve("auto", "cpu", True) == "xla"
  assert attention.resolve("auto", "gpu", True) == "tokamax_bands"
  assert attention.resolve("auto", "gpu", False) == "tokamax"
  assert attention.resolve("xla_scan", "gpu", True) == "xla_scan"
  attention.resolve.cache_clear()
  monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: None)
  try:
    assert attention.resolve("auto", "gpu", True) == "cudnn_bands"
    assert attention.resolve("auto", "gpu", False) == "xla"
    assert attention.resolve("auto", "tpu", True) == "splash"
  finally:
    attention.resolve.cache_clear()


def test_decoder_gradients_with_kernels_equal_xla():
  """The decoder (scan + remat) with the kernels inside: same loss gradients as model.attention
  "xla"; the band kernels get the batch's plan through Decoder(..., plan=)."""
  import dataclasses

  from flax import nnx

  from lumos_jax import config
  from lumos_jax.model import Decoder
  tiny = config.model_config(config.load("tiny"))
  ids, lay = random_packed_batch(np.random.default_rng(5), 1, 64, max_frames=2, max_hw=3)
  args = tuple(jnp.asarray(x) for x in (ids, lay["positions"], lay["k_start"], lay["k_end"]))
  plan = attention_plan.plan_of(lay["k_start"], lay["k_end"])

  def grads(impl, plan=None):
    model = Decoder(dataclasses.replace(tiny, attention=impl), rngs=nnx.Rngs(0))
    g, st = nnx.split(model)
    return jax.jit(jax.grad(lambda st: jnp.sum(nnx.merge(g, st)(*args, plan=plan) ** 2)))(st)

  ref = grads("xla")
  for impl, p in (("tokamax", None), ("tokamax_bands", plan), ("cudnn_bands", plan)):
    got = grads(impl, p)
    # float32 sums in another order through two layers, gradients up to ~20: a few entries
    # differ by up to ~7e-5
    jax.tree.map(lambda a, b, impl=impl: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4,
                                                                    err_msg=impl), got, ref)


def test_training_config_refuses_band_kernels():
  """The trainer and sampler derive no plan, so their config refuses the band-wise kernels."""
  from lumos_jax import config
  cfg = config.load("tiny")
  cfg.model.attention = "cudnn_bands"
  with pytest.raises(config.ConfigError, match="model.attention"):
    config.check_fields(cfg)


def test_kernels_run_per_shard_under_a_mesh():
  """Under a (data, fsdp, tensor) mesh the kernels run inside shard_map over batch and heads and
  still equal dense (each device: its batch rows, its contiguous query heads and their KV heads)."""
  from lumos_jax import sharding
  assert jax.device_count() == 8, "needs 8 (forced CPU) devices"
  rng = np.random.default_rng(11)
  _, lay = random_packed_batch(rng, 1, 48, max_frames=2, max_hw=2)
  k_start, k_end = (jnp.asarray(np.repeat(lay[f], 4, axis=0)) for f in ("k_start", "k_end"))
  plan = attention_plan.plan_of(np.asarray(k_start), np.asarray(k_end))
  q, k, v, _ = _qkv(rng, 4, 48, hq=4, hkv=2)
  ref = attention.attend(q, k, v, k_start, k_end, impl="dense")
  mesh = sharding.make_mesh((2, 2, 2))
  for impl in KERNELS:
    with jax.set_mesh(mesh):
      f = jax.jit(lambda *a, impl=impl: attention.attend(*a, impl=impl, plan=plan,
                                                         kernel_backend="xla"))
      text = f.lower(q, k, v, k_start, k_end).as_text()
      out = f(q, k, v, k_start, k_end)
    assert "shard_map" in text or "manual" in text.lower(), impl
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5, err_msg=impl)
