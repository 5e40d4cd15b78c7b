"""`config.init_from`: start a run from another run's parameters (ours, or an official checkpoint
converted by `python -m lumos_jax.convert import`) with a fresh optimizer at step 0.

Used only when the run has no checkpoint of its own (the loop resumes its own checkpoints first),
so a fine-tuning run that is preempted resumes where it stopped rather than starting over. The
parameter shapes are compared with the checkpoint's metadata before anything is restored, and a
mismatch names each parameter with both shapes.
"""
from __future__ import annotations

import logging

import orbax.checkpoint as ocp

from lumos_jax import checkpoint, config as config_lib

log = logging.getLogger("lumos_jax.train")


def _shapes(tree, prefix: str = "") -> dict[str, tuple[int, ...]]:
  """{dotted name: shape} of the arrays in a nested mapping (nnx.State or orbax metadata)."""
  out = {}
  for key in tree.keys():
    value, name = tree[key], f"{prefix}{key}"
    if hasattr(value, "keys"):
      out.update(_shapes(value, f"{name}."))
    else:
      out[name.removesuffix(".value")] = tuple(value.shape)
  return out


def check_shapes(source, abstract_params) -> int:
  """The latest step of run `source`; raises ValueError naming every parameter whose shape differs
  from this run's model (or that one side lacks), FileNotFoundError without a checkpoint."""
  available = checkpoint.steps(source)
  if not available:
    raise FileNotFoundError(f"config field init_from={source!r}: no finished checkpoint in "
                            f"{checkpoint.directory(source)}")
  step = available[-1]
  path = checkpoint.directory(source) / str(step) / checkpoint.PARAMS
  with ocp.StandardCheckpointer() as reader:
    saved = _shapes(reader.metadata(checkpoint._absolute(path)).item_metadata)
  wanted = _shapes(abstract_params)
  errors = [f"parameter {name}: checkpoint shape {saved.get(name, 'absent')}, this run's model "
            f"wants {wanted.get(name, 'absent')}"
            for name in sorted(set(saved) | set(wanted)) if saved.get(name) != wanted.get(name)]
  if errors:
    raise ValueError(f"config field init_from={source!r} ({path}) does not match this run's model "
                     "config:\n" + "\n".join(errors))
  return step


def fresh_state(cfg, fns):
  """The state a run without a checkpoint starts from: `fns.init()`, or with cfg.init_from the
  parameters of that run's latest checkpoint under a fresh optimizer state (step 0)."""
  if not cfg.init_from:
    return fns.init()
  abstract_params = fns.abstract_state["params"]
  step = check_shapes(cfg.init_from, abstract_params)
  source_cfg = config_lib.load_run(cfg.init_from)
  if source_cfg.get("vocab") != cfg.vocab:
    raise ValueError(f"config field init_from={cfg.init_from!r} was trained on the "
                     f"{source_cfg.get('vocab')!r} vocabulary, this run uses vocab={cfg.vocab!r}")
  params = checkpoint.restore_params(cfg.init_from, step, checkpoint.abstract_like(
      abstract_params, fns.param_sh))
  log.info("initialised from %s (step %d): fresh optimizer state, step 0", cfg.init_from, step)
  return fns.init_with(params)
