"""A run's checkpoints on disk, and reading just the parameters of one (no trainer, no optimizer).

WORKDIR/checkpoints/STEP/ holds one orbax item per part of the training state, so that inference
reads only what it needs:
  params       the decoder's parameters (`nnx.State` of float32 arrays), StandardSave
  train_state  the optimizer state, step counters and RNG, StandardSave
  data         the grain iterator position, one small JSON file per process
The trainer writes all three (`lumos_jax.train.checkpointer`); sampling, evaluation and notebooks
restore `params` alone (a 3B run's Adam moments are twice its parameters), so a checkpoint copied
without `train_state` and `data` still samples.
"""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINTS = "checkpoints"  # WORKDIR/checkpoints/STEP/...
PARAMS, TRAIN_STATE, DATA = "params", "train_state", "data"
LEGACY_STATE = "state"  # lumos_jax 0.1: parameters and optimizer state in one item


def directory(workdir) -> epath.Path:
  """WORKDIR/checkpoints, as an etils path: a gs://bucket/run workdir keeps its scheme (pathlib
  would turn it into gs:/bucket/run)."""
  return epath.Path(workdir) / CHECKPOINTS


def steps(workdir) -> list[int]:
  """Steps with a finished checkpoint (orbax renames a step directory into place when done)."""
  root = directory(workdir)
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / PARAMS).is_dir())


def check_layout(step_dir) -> None:
  """Raises ValueError for a step directory in the lumos_jax 0.1 layout (one `state` item)."""
  step_dir = epath.Path(step_dir)
  if (step_dir / LEGACY_STATE).is_dir() and not (step_dir / PARAMS).is_dir():
    raise ValueError(f"{step_dir} holds one '{LEGACY_STATE}' item: it was written by lumos_jax "
                     f"0.1; checkpoints now keep '{PARAMS}', '{TRAIN_STATE}' and '{DATA}' apart "
                     "(so that sampling reads the parameters alone). Resume or sample it with "
                     "lumos_jax 0.1, or train the run again")


def _absolute(path: epath.Path) -> epath.Path:
  """`path` made absolute, as orbax wants it; an object-store URL already is (epath's absolute()
  would put the working directory in front of gs://...)."""
  return path if "://" in str(path) else path.absolute()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` (arrays or shape structs) placed with `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def restore_params(workdir, step: int | None, abstract_params):
  """The parameters saved at `step` (None: the latest), laid out like `abstract_params`
  (ShapeDtypeStructs with shardings on the current devices). Reads no optimizer state.

  Raises FileNotFoundError when there is no such checkpoint and ValueError when its parameters do
  not match `abstract_params` (another model config).
  """
  available = steps(workdir)
  if step is None and available:
    step = available[-1]
  if step not in available:
    for step_dir in sorted(directory(workdir).glob("[0-9]*")):
      check_layout(step_dir)
    raise FileNotFoundError(f"no checkpoint {'' if step is None else step} in "
                            f"{directory(workdir)} (finished steps: {available or 'none'})")
  path = directory(workdir) / str(step) / PARAMS
  with ocp.StandardCheckpointer() as reader:
    try:
      return reader.restore(_absolute(path), abstract_params)
    except (ValueError, KeyError) as e:
      raise ValueError(f"checkpoint {path} does not match the model of the run's config: "
                       f"{e}") from e
