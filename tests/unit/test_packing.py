"""Packing in the pipeline (`PipelineConfig.pack`): packed rows hold whole samples laid out as
`tokens.pack` does, the same samples as the padded pipeline, the same loss, gradients and eval sums
as the padded batch of those samples, resume exactly; and the padded path is unchanged."""
import dataclasses
import functools

import jax
import numpy as np
import pytest

from helpers import VOCAB, assert_batches_equal, random_sample, take
from lumos_jax import config, model as model_lib, tokens
from lumos_jax.data import pipeline
from lumos_jax.train import step

BINS = 3


def _records(n=60, seed=0):
  """An image/video mix: odd records are 1-frame images, even ones videos of 1-3 frames."""
  rng = np.random.default_rng(seed)
  return [{"id": f"r{i}", "tokens": random_sample(rng, max_frames=1 if i % 2 else 3).tolist()}
          for i in range(n)]


RECORDS = _records()


def _cfg(**kw) -> pipeline.PipelineConfig:
  base = dict(seq_len=128, batch_size=1, seed=5, max_frames=2, num_epochs=1, pack_bins=BINS)
  return pipeline.PipelineConfig(**{**base, **kw})


def _build(cfg, records=RECORDS):
  return pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1)


def _samples(batch) -> list[dict]:
  """The samples of a batch's rows in row order, {field: [n(, 3)]} with k ranges made relative to
  the sample's start (a sample starts where index is 0 on a valid token)."""
  out = []
  for b in range(len(batch["valid"])):
    valid = batch["valid"][b]
    starts = np.flatnonzero(valid & (batch["index"][b] == 0))
    for s, e in zip(starts, [*starts[1:], int(valid.sum())]):
      x = {k: v[b, s:e] for k, v in batch.items()}
      assert (x["k_start"] >= s).all() and (x["k_end"] <= e).all()  # attention stays inside
      out.append(x | {"k_start": x["k_start"] - s, "k_end": x["k_end"] - s})
  return out


def _key(sample: dict) -> bytes:
  return b"|".join(sample[f].tobytes() for f in pipeline.FIELDS)


def test_packed_rows_hold_whole_samples_with_their_own_layouts():
  rows = list(_build(_cfg(pack=True)))
  per_row = [len(_samples(r)) for r in rows]
  assert max(per_row) > 1  # images do share rows
  for r in rows:
    n, q = int(r["valid"][0].sum()), np.arange(128)
    assert r["valid"][0][:n].all() and not r["valid"][0][n:].any()  # padding only at the end
    pad = {"k_start": q[n:], "k_end": q[n:] + 1, "frame": -1, "weights": 0, "inputs": 0,
           "targets": 0, "positions": 0, "index": 0}
    for f, want in pad.items():  # tokens.pack's padding
      np.testing.assert_array_equal(r[f][0][n:], np.broadcast_to(want, r[f][0][n:].shape), f)
    for x in _samples(r):  # each sample is whole and laid out on its own (positions restart)
      lay = tokens.parse(x["targets"], VOCAB)
      for f in ("positions", "index", "k_start", "k_end", "frame"):
        np.testing.assert_array_equal(x[f], getattr(lay, f), f)
      masked = x["inputs"] != x["targets"]
      assert (x["inputs"][masked] == VOCAB.mask).all()
      np.testing.assert_array_equal(x["weights"] > 0, masked & lay.code)


def test_packed_rows_hold_the_padded_pipelines_samples_in_stream_order():
  """Over a whole epoch the multiset of samples (every field, masks included) is the padded
  pipeline's; and after each complete set of `pack_bins` rows the samples so far are exactly the
  padded stream's first m (first fit reorders samples only inside a set of rows)."""
  packed = [_samples(r) for r in _build(_cfg(pack=True))]
  padded = [_key(s) for r in _build(_cfg()) for s in _samples(r)]
  assert len(padded) == len(RECORDS) and len(packed) < len(padded)
  seen = []
  for i, row in enumerate(packed):
    seen += [_key(s) for s in row]
    if (i + 1) % BINS == 0 or i + 1 == len(packed):
      assert sorted(seen) == sorted(padded[:len(seen)]), f"after row {i}"
  assert len(seen) == len(padded)


@functools.cache
def _tiny_model():
  cfg = config.load("tiny")
  model_cfg = config.model_config(cfg)
  graphdef, params = model_lib.init_model(model_cfg, 0)
  return params, dict(graphdef=graphdef, model_cfg=model_cfg, loss_chunk=64)


def _same_samples_padded(packed: dict) -> dict:
  """The padded pipeline's rows holding the samples of a packed batch, stacked [S, L]."""
  by_key = {}
  for r in _build(_cfg()):
    by_key[_key(_samples(r)[0])] = {k: v[0] for k, v in r.items()}
  rows = [by_key[_key(s)] for s in _samples(packed)]
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_packed_batch_has_the_loss_gradients_and_eval_sums_of_the_padded_batch():
  packed = next(iter(_build(_cfg(pack=True, batch_size=2))))
  padded = _same_samples_padded(packed)
  assert len(padded["valid"]) > 2  # more samples than rows
  params, kw = _tiny_model()
  grad_fn = jax.jit(jax.grad(functools.partial(step.batch_loss, **kw), has_aux=True))
  (g_packed, aux_packed), (g_padded, aux_padded) = grad_fn(params, packed), grad_fn(params, padded)
  for k in ("loss_sum", "n_tokens"):
    np.testing.assert_allclose(aux_packed[k], aux_padded[k], rtol=1e-5, err_msg=k)
  assert float(aux_packed["n_tokens"]) > 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_packed), jax.tree.leaves(g_padded)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=str(path))
  leaky = packed | {"k_start": np.zeros_like(packed["k_start"])}  # samples seeing each other
  assert abs(float(grad_fn(params, leaky)[1]["loss_sum"] - aux_padded["loss_sum"])) > 1e-3
  eval_fn = jax.jit(functools.partial(step.eval_step, max_frames=2, **kw))
  e_packed, e_padded = eval_fn(params, packed), eval_fn(params, padded)
  np.testing.assert_array_equal(e_packed["n_tokens"], e_padded["n_tokens"])
  np.testing.assert_allclose(e_packed["loss_sum"], e_padded["loss_sum"], rtol=1e-5)


@pytest.mark.parametrize("taken", [1, 4])  # resume inside a set of packed rows and after it
def test_resume_with_packing_is_exact(taken):
  cfg = _cfg(pack=True, batch_size=2, num_epochs=None)
  full = take(iter(_build(cfg)), taken + 5)
  it = iter(_build(cfg))
  take(it, taken)
  fresh = iter(_build(cfg))
  fresh.set_state(it.get_state())
  assert_batches_equal(take(fresh, 5), full[taken:])


def test_padded_path_is_unchanged():
  """pack=False (the default) gives one sample per row padded exactly as `tokens.pad` does."""
  cfg = _cfg(batch_size=4)
  default = dataclasses.replace(cfg)
  assert not default.pack
  batch = next(iter(_build(cfg)))
  for b in range(4):
    n = int(batch["valid"][b].sum())
    want = tokens.pad(tokens.parse(batch["targets"][b][:n], VOCAB), 128)
    for f in ("positions", "index", "k_start", "k_end", "frame", "valid"):
      np.testing.assert_array_equal(batch[f][b], getattr(want, f), f)
    for f in ("inputs", "targets", "weights"):
      assert not batch[f][b][n:].any()
