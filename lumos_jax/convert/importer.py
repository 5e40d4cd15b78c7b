"""Official checkpoint directory (config.json + *.safetensors) -> a lumos_jax run workdir.

The workdir gets what our trainer writes for inference: config.json (config.save_run) and
checkpoints/0/params (orbax), so `lumos_jax.sample.load`, `python -m lumos_jax.sample` and
`--config.init_from` read it. Memory: the parameters are written one kind at a time (orbax
partial saves): each stacked array [n_layers, ...] is filled layer by layer from single tensors
and freed once written, so the peak is about the largest stacked kind (or the embedding / LM head)
plus one official tensor, not the whole model.

Everything is checked from the safetensors headers before anything is written (unknown, missing
and mis-shaped tensors, each named), and the workdir is assembled in a temporary sibling directory
renamed into place at the end, so a failure leaves nothing at WORKDIR.
"""
from __future__ import annotations

import json
import logging
import pathlib
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
from orbax.checkpoint.experimental import v1 as ocp_v1

from lumos_jax import checkpoint, config as config_lib
from lumos_jax.convert import hf_config, names
from lumos_jax.convert.safetensors_io import OfficialTensors

log = logging.getLogger("lumos_jax.convert")
_PARTIAL_ITEM = "state"  # where orbax's partial save puts the pytree inside its checkpoint


def check_tensors(tensors: OfficialTensors, m) -> list[str]:
  """Raises ValueError naming every unknown, missing or mis-shaped tensor (one line each);
  returns the skipped names (Chameleon's VQGAN). Reads headers only."""
  expected = names.official_names(m)
  errors, skipped = [], []
  for name in sorted(tensors.file_of):
    if name.startswith(names.SKIPPED_PREFIXES):
      skipped.append(name)
    elif name not in expected:
      errors.append(f"unknown tensor {name} (not part of a Lumos-1 model of this config)")
    elif tensors.shape(name) not in expected[name]:
      want = " or ".join(str(list(s)) for s in expected[name])
      errors.append(f"tensor {name} has shape {list(tensors.shape(name))}, expected {want}")
  errors += [f"missing tensor {name}" for name in expected if name not in tensors.file_of]
  if errors:
    raise ValueError(f"{tensors.dir}: the checkpoint does not match its config.json:\n"
                     + "\n".join(errors))
  return skipped


def _nested(path: tuple[str, ...], array: np.ndarray) -> dict:
  """{path[0]: {...: {"value": array}}}: the tree our trainer's params item has (nnx.State)."""
  tree = {"value": array}
  for key in reversed(path):
    tree = {key: tree}
  return tree


def _stacked(tensors: OfficialTensors, kind: names.Kind, n_layers: int) -> np.ndarray:
  """Our stacked [n_layers, ...] array of one kind, filled layer by layer (one tensor in memory)."""
  out = np.empty((n_layers, *kind.shape), np.float32)
  for layer in range(n_layers):
    name = names.layer_name(kind, layer)
    try:
      out[layer] = kind.to_ours(tensors.get(name))
    except ValueError as e:
      raise ValueError(f"{tensors.dir}: tensor {name}: {e}") from e
  return out


def _save(partial: pathlib.Path, path: tuple[str, ...], array: np.ndarray) -> None:
  """Adds one parameter to the partial save. Why a host jax.Array and not the numpy array: orbax
  serialises a numpy leaf through two temporary copies (3x the array at peak, measured), a
  jax.Array through none, so the peak is the copy made here (2x) while the caller's numpy array,
  referenced by nothing else, is freed on return."""
  on_host = jax.device_put(array, jax.devices("cpu")[0])
  del array
  ocp_v1.partial.save(partial, _nested(path, on_host))


def write_params(tensors: OfficialTensors, m, params_dir: pathlib.Path) -> None:
  """Writes our parameters as an orbax params item at `params_dir`, one kind at a time."""
  partial = params_dir.parent / f"{params_dir.name}.partial"
  for kind in names.kinds(m):
    _save(partial, kind.path, _stacked(tensors, kind, m.n_layers) if kind.per_layer
          else kind.to_ours(tensors.get(kind.hf)))
  head = tensors.get(names.LM_HEAD)  # [V, d]; ours: [d, off] and [d, V - off]
  for key, rows in (("head_text", slice(0, m.visual_offset)),
                    ("head_visual", slice(m.visual_offset, None))):
    _save(partial, (key,), np.ascontiguousarray(head[rows].T))
  del head
  ocp_v1.partial.finalize(partial)
  item = partial / _PARTIAL_ITEM
  if not (item / "_METADATA").is_file():
    raise RuntimeError(f"orbax's partial save left no pytree at {item}: this orbax version "
                       "lays checkpoints out differently than lumos_jax expects")
  # The step metadata the trainer's params items carry (orbax warns on restore without it).
  if (partial / "_CHECKPOINT_METADATA").is_file():
    shutil.copy(partial / "_CHECKPOINT_METADATA", item / "_CHECKPOINT_METADATA")
  item.rename(params_dir)
  shutil.rmtree(partial)


def import_checkpoint(hf_dir, workdir) -> ml_collections.ConfigDict:
  """Converts the official checkpoint in `hf_dir` into a new run workdir `workdir` (which must
  not exist or be empty). Returns the run config written."""
  hf_dir, workdir = pathlib.Path(hf_dir), pathlib.Path(workdir)
  config_path = hf_dir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{config_path} not found: HF_DIR must hold the official "
                            "checkpoint's config.json and *.safetensors")
  if workdir.exists() and any(workdir.iterdir()):
    raise FileExistsError(f"{workdir} exists and is not empty: choose a new WORKDIR")
  cfg = hf_config.run_config(json.loads(config_path.read_text()), str(config_path))
  m = config_lib.model_config(cfg)
  tensors = OfficialTensors(hf_dir)
  skipped = check_tensors(tensors, m)
  if skipped:
    prefixes = sorted({p for p in names.SKIPPED_PREFIXES for n in skipped if n.startswith(p)})
    log.info("skipping %d tensors under %s (Chameleon's VQGAN: Lumos-1 does not use it)",
             len(skipped), ", ".join(prefixes))
  workdir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{workdir.name}.", dir=workdir.parent))
  try:
    step_dir = checkpoint.directory(tmp) / "0"
    step_dir.mkdir(parents=True)
    write_params(tensors, m, pathlib.Path(step_dir / checkpoint.PARAMS))
    config_lib.save_run(cfg, tmp)
    if workdir.exists():
      workdir.rmdir()  # empty (checked above)
    tmp.rename(workdir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("wrote %s (step 0) from %s", workdir, hf_dir)
  return cfg

