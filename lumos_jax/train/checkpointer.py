"""Orbax checkpoints of the training state together with the grain iterator state.

Each step directory holds the items named in `lumos_jax.checkpoint`: `params`, `train_state`
(optimizer state, step counters, RNG; both pytrees saved with StandardSave, every process writing
its shards) and `data` (the grain iterator position, one small JSON file per process). Saves are
asynchronous and atomic (orbax writes to a temporary directory and renames it), so a process
killed mid-save leaves the previous step restorable. Restoring takes an abstract state whose
leaves carry shardings on the *current* mesh, so a checkpoint written on 8 devices restores on
1, 2 or 4. A checkpoint written by another number of processes has no iterator
state for this process: the stream is then repositioned from the saved positions (the pipeline's
stream does not depend on the process count; see lumos_jax.data.pipeline).
"""
from __future__ import annotations

import json
import logging
import math

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from lumos_jax.checkpoint import DATA, PARAMS, TRAIN_STATE, check_layout


def _split(state: dict) -> dict:
  """The state as checkpoint items: parameters apart, so that inference reads them alone."""
  return {PARAMS: state["params"], TRAIN_STATE: {k: v for k, v in state.items() if k != "params"}}


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory` (a local path or an object-store
  URL such as gs://bucket/run/checkpoints: orbax writes through etils.epath)."""

  def __init__(self, directory, keep: int = 3, async_save: bool = True):
    self.manager = ocp.CheckpointManager(
        epath.Path(directory), options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, *, force: bool = False) -> bool:
    """Starts saving `state` and the iterator position as `step` (returns at once when async)."""
    items = {k: ocp.args.StandardSave(v) for k, v in _split(state).items()}
    return self.manager.save(step, args=ocp.args.Composite(
        **items, **{DATA: grain.checkpoint.CheckpointSave(data_iterator)}), force=force)

  def restore(self, step: int, abstract_state, data_iterator):
    """The state saved at `step`, laid out as `abstract_state`; moves `data_iterator` in place."""
    step_dir = epath.Path(self.manager.directory) / str(step)
    check_layout(step_dir)
    data_dir = step_dir / DATA
    items = {k: ocp.args.StandardRestore(v) for k, v in _split(abstract_state).items()}
    if (data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists():
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
    else:
      data_iterator.set_state(_repositioned(data_dir))
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return {"params": restored[PARAMS], **restored[TRAIN_STATE]}

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _repositioned(data_dir: epath.Path) -> dict:
  """Iterator state for this process from the states another process count saved.

  Old process 0 of m stood at local element k, i.e. the m processes had consumed the first k * m
  elements of the shared stream; new process p of n takes elements p, p + n, ..., so it resumes at
  local index ceil((k * m - p) / n).
  """
  saved = sorted(data_dir.glob("process_0-of-*.json"))
  if not saved:
    raise FileNotFoundError(f"no data iterator state in {data_dir}")
  old_count = int(saved[0].stem.rsplit("-of-", 1)[1])
  state = json.loads(saved[0].read_text())
  if set(state) != {"next_index"}:
    raise ValueError(f"the data iterator state in {saved[0]} was written with worker processes "
                     f"by {old_count} processes and cannot be moved to {jax.process_count()}: "
                     "resume once with the old process count, or with config field data.workers=0")
  consumed = state["next_index"] * old_count
  p, n = jax.process_index(), jax.process_count()
  logging.getLogger("lumos_jax.train").warning(
      "checkpoint written by %d process(es), resuming on %d: data stream repositioned to "
      "element %d",
      old_count, n, consumed)
  return {"next_index": max(0, math.ceil((consumed - p) / n))}
