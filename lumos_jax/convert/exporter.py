"""A lumos_jax run workdir -> an official-format checkpoint directory (config.json +
safetensors, sharded with model.safetensors.index.json when larger than one shard) that
transformers' ChameleonForConditionalGeneration / ChameleonModel and the official Lumos-1 code load.

Memory: one parameter kind is restored at a time (orbax partial restore, as numpy on the host) and
one shard is buffered, so the peak is about the largest stacked kind plus one shard.
Written in float32 (our parameters' dtype). QK-norm weights/biases are written in transformers'
shape [heads, head_dim] (the shared vector repeated); the official Lumos code's own loader wants
[1, head_dim] (its model_parallel_size = 1): take row 0 there.
"""
from __future__ import annotations

import json
import logging
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import orbax.checkpoint as ocp

from lumos_jax import checkpoint, config as config_lib
from lumos_jax.convert import hf_config, names
from lumos_jax.convert.importer import _nested
from lumos_jax.convert.safetensors_io import plan_shards, write_sharded

log = logging.getLogger("lumos_jax.convert")


def read_kind(params_dir: pathlib.Path, path: tuple[str, ...]) -> np.ndarray:
  """One parameter of a params item as numpy, reading nothing else (orbax partial restore)."""
  with ocp.PyTreeCheckpointer() as reader:
    tree = reader.restore(params_dir.absolute(), args=ocp.args.PyTreeRestore(
        item=_nested(path, 0), restore_args=_nested(path, ocp.RestoreArgs(
            restore_type=np.ndarray)), partial_restore=True))
  for key in (*path, "value"):
    tree = tree[key]
  return np.asarray(tree, np.float32)


def _tensor_sizes(m) -> list[tuple[str, int]]:
  """(official name, float32 bytes) of every tensor, in the order `_tensors` produces them."""
  sizes = []
  for kind in names.kinds(m):
    nbytes = 4 * int(np.prod(kind.hf_shapes[0]))
    layers = [names.layer_name(kind, n) for n in range(m.n_layers)] if kind.per_layer else [
        kind.hf]
    sizes += [(name, nbytes) for name in layers]
  return sizes + [(names.LM_HEAD, 4 * m.vocab_size * m.d_model)]


def _tensors(params_dir: pathlib.Path, m) -> Iterator[tuple[str, np.ndarray]]:
  """(official name, float32 array) of every tensor, one of our kinds restored at a time."""
  for kind in names.kinds(m):
    ours = read_kind(params_dir, kind.path)
    if kind.per_layer:
      for n in range(m.n_layers):
        yield names.layer_name(kind, n), kind.to_hf(ours[n])
    else:
      yield kind.hf, kind.to_hf(ours)
    del ours
  text, visual = (read_kind(params_dir, (k,)) for k in ("head_text", "head_visual"))
  yield names.LM_HEAD, np.concatenate([text.T, visual.T], axis=0)


def export_checkpoint(workdir, hf_dir, *, step: int | None = None,
                      max_shard_bytes: int = 2 << 30) -> list[pathlib.Path]:
  """Writes the run in `workdir` (checkpoint `step`, None: the latest) as an official-format
  checkpoint directory `hf_dir` (must not exist or be empty). Returns the files written."""
  workdir, hf_dir = pathlib.Path(workdir), pathlib.Path(hf_dir)
  cfg = config_lib.load_run(workdir)
  m = config_lib.model_config(cfg)
  official = hf_config.official_config(cfg)  # raises for a model transformers cannot express
  available = checkpoint.steps(workdir)
  step = available[-1] if step is None and available else step
  if step not in available:
    raise FileNotFoundError(f"no checkpoint {'' if step is None else step} in "
                            f"{checkpoint.directory(workdir)} (finished steps: "
                            f"{available or 'none'})")
  if hf_dir.exists() and any(hf_dir.iterdir()):
    raise FileExistsError(f"{hf_dir} exists and is not empty: choose a new HF_DIR")
  params_dir = pathlib.Path(checkpoint.directory(workdir) / str(step) / checkpoint.PARAMS)
  hf_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{hf_dir.name}.", dir=hf_dir.parent))
  try:
    shards = plan_shards(_tensor_sizes(m), max_shard_bytes)
    files = write_sharded(tmp, shards, _tensors(params_dir, m))
    (tmp / "config.json").write_text(json.dumps(official, indent=2))
    if hf_dir.exists():
      hf_dir.rmdir()
    tmp.rename(hf_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("wrote %s (step %d of %s, %d safetensors file(s))", hf_dir, step, workdir, len(shards))
  return [hf_dir / f.name for f in files] + [hf_dir / "config.json"]
