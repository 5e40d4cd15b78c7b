"""Orbax checkpoints of the training state together with the grain iterator state.

Each step directory holds `state` (params, optimizer state, step counters, RNG: a pytree saved with
StandardSave, every process writing its shards) and `data` (the grain iterator position, one small
JSON file per process). Saves are asynchronous and atomic (orbax writes to a temporary directory
and renames it), so a process killed mid-save leaves the previous step restorable. Restoring takes
an abstract state whose leaves carry shardings on the *current* mesh, so a checkpoint written on 8
devices restores on 1, 2 or 4.
"""
from __future__ import annotations

import grain
import jax
import orbax.checkpoint as ocp


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` (arrays or shape structs) placed with `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `directory`."""

  def __init__(self, directory, keep: int = 3, async_save: bool = True):
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, *, force: bool = False) -> bool:
    """Starts saving `state` and the iterator position as `step` (returns at once when async)."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator)), force=force)

  def restore(self, step: int, abstract_state, data_iterator):
    """The state saved at `step`, laid out as `abstract_state`; moves `data_iterator` in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["state"]

  def restore_state(self, step: int, abstract_state):
    """Only the training state (for sampling or inspection: no data iterator needed)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))["state"]

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
