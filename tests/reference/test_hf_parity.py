"""Our decoder on a converted official checkpoint against transformers' Chameleon (the model the
official Lumos-1 code extends), and MM-RoPE against the official formula on a video sequence.

A tiny random model is written in the official format (tests/official_format.py), imported with
lumos_jax.convert, and run by both sides in float32: text-only (positions (p, p, p), causal), and a
two-frame video where transformers' decoder layers get the official MM-RoPE cos/sin
(test_official_reference.reference_angles) and the official block-causal mask.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the `parity` extra (torch)")
transformers = pytest.importorskip("transformers",
                                   reason="parity tests need the `parity` extra (transformers)")

import official_format  # noqa: E402
from flax import nnx  # noqa: E402
from test_official_reference import (  # noqa: E402
    reference_angles, reference_layout, reference_mask)

from lumos_jax import convert, sample, tokens  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(our model, transformers ChameleonModel, lm_head weight [V, d]) of one random tiny model."""
  root = tmp_path_factory.mktemp("parity")
  arrays = official_format.write(root / "hf", qk_rows="heads")
  convert.import_checkpoint(root / "hf", root / "run")
  sampler, _, _ = sample.load(root / "run")
  ours = nnx.merge(sampler.graphdef, sampler.params)
  config = transformers.ChameleonConfig(**official_format.TINY, vocabulary_map={})
  config._attn_implementation = "eager"
  theirs = transformers.ChameleonModel(config).eval()
  state = {k.removeprefix("model."): torch.from_numpy(v) for k, v in arrays.items()
           if k != "lm_head.weight"}
  missing, unexpected = theirs.load_state_dict(state, strict=False)
  assert not unexpected and all(k.startswith("vqmodel.") for k in missing), (missing, unexpected)
  return ours, theirs, arrays["lm_head.weight"]


def _ours(model, ids, positions, k_start, k_end):
  """(hidden [L, d], logits [L, V]) of our model on one sequence."""
  hidden = model(ids[None], positions[None], k_start[None], k_end[None])
  return np.asarray(hidden[0]), np.asarray(model.logits(hidden)[0])


def test_text_forward_matches_transformers_chameleon(converted):
  ours, theirs, lm_head = converted
  ids = np.random.default_rng(1).integers(0, 65536, 24).astype(np.int32)
  idx = np.arange(len(ids), dtype=np.int32)
  hidden, logits = _ours(ours, ids, np.stack([idx] * 3, -1), np.zeros_like(idx), idx + 1)
  with torch.no_grad():
    ref = theirs(input_ids=torch.from_numpy(ids[None]).long()).last_hidden_state[0].numpy()
  np.testing.assert_allclose(hidden, ref, atol=2e-4, rtol=2e-4)
  np.testing.assert_allclose(logits, ref @ lm_head.T, atol=2e-4, rtol=2e-4)


def _official_video_forward(theirs, ids):
  """Transformers' Chameleon layers with the official MM-RoPE cos/sin and block-causal mask."""
  ref = reference_layout(ids)
  head_dim = theirs.config.hidden_size // theirs.config.num_attention_heads
  angles = reference_angles(ref["positions"], head_dim)  # [L, D/2] float32
  emb = torch.from_numpy(np.concatenate([angles, angles], -1))[None]
  allowed = torch.from_numpy(reference_mask(ref["frame"]))
  mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
  with torch.no_grad():
    x = theirs.embed_tokens(torch.from_numpy(ids[None]).long())
    for layer in theirs.layers:
      out = layer(x, attention_mask=mask, position_embeddings=(emb.cos(), emb.sin()))
      x = out[0] if isinstance(out, tuple) else out
    return theirs.norm(x)[0].numpy()


def test_video_forward_matches_official_mm_rope(converted):
  ours, theirs, _ = converted
  frames = np.random.default_rng(2).integers(0, 64000, (2, 4, 4))
  ids = tokens.build([300, 301, 302], frames, fps=12, duration=2).astype(np.int32)
  layout = tokens.parse(ids)
  assert (layout.positions[:, 0] != layout.positions[:, 1]).any()  # 3-D positions in play
  hidden, _ = _ours(ours, ids, layout.positions, layout.k_start, layout.k_end)
  np.testing.assert_allclose(hidden, _official_video_forward(theirs, ids), atol=2e-4, rtol=2e-4)
