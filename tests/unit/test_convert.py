"""lumos_jax.convert: official safetensors <-> our orbax params, bit-exact both ways, and the
refusals (unknown / missing / mis-shaped tensors, per-head QK-norms) that write nothing."""
from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import official_format
from lumos_jax import checkpoint, config, convert, model, sample
from lumos_jax.convert import names
from lumos_jax.convert.safetensors_io import OfficialTensors


def _params(workdir) -> dict:
  sampler, _, _ = sample.load(workdir)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(sampler.params))


def _our_run(workdir) -> dict:
  """A run of the tiny official-format shape written as our trainer does (config + params)."""
  cfg = convert.hf_config.run_config(official_format.TINY, "TINY")
  cfg.model.init_std = 0.5
  _, params = model.init_model(config.model_config(cfg), seed=3)
  workdir.mkdir()
  config.save_run(cfg, workdir)
  with ocp.StandardCheckpointer() as writer:
    writer.save((checkpoint.directory(workdir) / "7" / checkpoint.PARAMS).absolute(), params)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(params))


def test_ours_to_official_to_ours_is_bit_exact(tmp_path):
  before = _our_run(tmp_path / "ours")
  convert.export_checkpoint(tmp_path / "ours", tmp_path / "hf", max_shard_bytes=8 << 20)
  assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()  # sharded
  convert.import_checkpoint(tmp_path / "hf", tmp_path / "back")
  after = _params(tmp_path / "back")
  same = jax.tree.map(np.array_equal, before, after)
  assert all(jax.tree.leaves(same)), same
  exported = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert exported["num_hidden_layers"] == 2 and exported["mm_rope"] is True


@pytest.mark.parametrize("shards,qk_rows", [(1, "shard"), (3, "heads")])
def test_official_to_ours_to_official_keeps_every_tensor(tmp_path, shards, qk_rows):
  arrays = official_format.write(tmp_path / "hf", shards=shards, qk_rows=qk_rows)
  cfg = convert.import_checkpoint(tmp_path / "hf", tmp_path / "run")
  assert cfg.model.rope_variant == "mm" and cfg.vocab == "lumos" and cfg.model.head_dim == 32
  convert.export_checkpoint(tmp_path / "run", tmp_path / "out")
  back = OfficialTensors(tmp_path / "out")
  assert set(back.file_of) == set(arrays)
  for name, array in arrays.items():
    got = back.get(name)
    if "_norm." in name and "self_attn" in name:  # written as [heads, D]: one row per head
      assert np.array_equal(got, np.broadcast_to(array[:1], got.shape)), name
    else:
      assert np.array_equal(got, array), name


def test_bf16_checkpoint_becomes_float32(tmp_path):
  torch = pytest.importorskip("torch", reason="writing bf16 safetensors needs torch")
  from safetensors.torch import save_file
  arrays = official_format.tensors(official_format.TINY)
  official_format.write(tmp_path / "hf", arrays=arrays)
  bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in arrays.items()}
  save_file(bf16, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
  convert.import_checkpoint(tmp_path / "hf", tmp_path / "run")
  embed = _params(tmp_path / "run")["embed"]
  assert embed.dtype == np.float32
  assert np.array_equal(embed, bf16["model.embed_tokens.weight"].float().numpy())


def _refused(tmp_path, arrays, *fragments):
  official_format.write(tmp_path / "hf", arrays=arrays)
  with pytest.raises(ValueError) as e:
    convert.import_checkpoint(tmp_path / "hf", tmp_path / "run")
  for fragment in fragments:
    assert fragment in str(e.value)
  assert not (tmp_path / "run").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary directory left behind


def test_unknown_tensor_is_named_and_nothing_written(tmp_path):
  arrays = official_format.tensors(official_format.TINY)
  arrays["model.layers.0.self_attn.rotary.inv_freq"] = np.zeros(16, np.float32)
  arrays["model.vqmodel.encoder.conv_in.weight"] = np.zeros(4, np.float32)  # skipped, not an error
  _refused(tmp_path, arrays, "unknown tensor model.layers.0.self_attn.rotary.inv_freq")


def test_missing_and_misshaped_tensors_are_named(tmp_path):
  arrays = official_format.tensors(official_format.TINY)
  del arrays["model.layers.1.mlp.up_proj.weight"]
  arrays["model.layers.0.self_attn.o_proj.weight"] = np.zeros((64, 32), np.float32)
  _refused(tmp_path, arrays, "missing tensor model.layers.1.mlp.up_proj.weight",
           "tensor model.layers.0.self_attn.o_proj.weight has shape [64, 32], expected [64, 64]")


def test_per_head_qk_norm_is_refused_by_name(tmp_path):
  arrays = official_format.tensors(official_format.TINY, qk_rows="heads")
  arrays["model.layers.1.self_attn.q_norm.bias"][1] += 1.0  # heads differ
  _refused(tmp_path, arrays, "model.layers.1.self_attn.q_norm.bias", "rows")


def test_names_cover_every_parameter_of_the_decoder():
  cfg = convert.hf_config.run_config(official_format.TINY, "TINY")
  m = config.model_config(cfg)
  _, abstract = model.abstract_model(m)
  ours = {jax.tree_util.keystr(k, simple=True, separator=".")
          for k, _ in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(abstract))[0]}
  covered = {k.name for k in names.kinds(m)} | {"head_text", "head_visual"}
  assert ours == covered
