"""The pure train and eval steps, and their jit wiring.

`train_step(state, batch) -> (state, metrics)` is pure over the state of `lumos_jax.train.state`;
`build_functions` below jits it (and the eval and init functions) with explicit shardings and a
donated state. Gradient accumulation runs `accum_steps` micro-batches with a scan and divides
the summed gradients by the total number of loss tokens, so the update is the same as one big
batch.
"""

import dataclasses
import functools
import logging
import os
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics
from flax import nnx

from lumos_jax import checkpoint, loss, model as model_lib, rope, sharding
from lumos_jax.data import pipeline
from lumos_jax.model import ModelConfig
from lumos_jax.train import optim, state as state_lib


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """What a step reports; merged over a logging window (means of the per-step values)."""
  loss: clu_metrics.Average.from_output("loss")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
  param_norm: clu_metrics.LastValue.from_output("param_norm")
  loss_tokens: clu_metrics.Average.from_output("loss_tokens")
  skipped_in_window: clu_metrics.Average.from_output("skipped")  # fraction of skipped updates


def batch_loss(params, batch, *, graphdef, model_cfg: ModelConfig, loss_chunk: int):
  """(sum of token losses, aux) of one (micro-)batch: the AR-DF loss of the decoder."""
  model = nnx.merge(graphdef, params)
  positions = rope.rope_positions(batch["positions"], batch["index"], model_cfg.rope_variant)
  hidden = model(batch["inputs"], positions, batch["k_start"], batch["k_end"])
  _, aux = loss.chunked(hidden, model.head_visual[...], batch["targets"], batch["weights"],
                        visual_offset=model_cfg.visual_offset, chunk=loss_chunk)
  return aux["loss_sum"], aux


def train_step(state: dict, batch: dict, *, tx: optax.GradientTransformation, accum_steps: int,
               **loss_kw) -> tuple[dict, TrainMetrics]:
  """One optimizer step on `batch` (arrays [B, L...]); skips the update if anything is not
  finite."""
  grad_fn = jax.grad(functools.partial(batch_loss, **loss_kw), has_aux=True)
  micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

  def accumulate(carry, mb):
    grads, aux = grad_fn(state["params"], mb)
    return jax.tree.map(jnp.add, carry, (grads, aux)), None

  zeros = (jax.tree.map(jnp.zeros_like, state["params"]),
           {"loss_sum": jnp.zeros((), jnp.float32), "n_tokens": jnp.zeros((), jnp.float32)})
  (grads, aux), _ = jax.lax.scan(accumulate, zeros, micro)
  n_tokens = jnp.maximum(aux["n_tokens"], 1.0)
  grads = jax.tree.map(lambda g: g / n_tokens, grads)
  loss_value = aux["loss_sum"] / n_tokens
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)

  updates, new_opt = tx.update(grads, state["opt"], state["params"])
  new_params = optax.apply_updates(state["params"], updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = {
      "params": keep(new_params, state["params"]),
      "opt": keep(new_opt, state["opt"]),
      "step": state["step"] + 1,
      "skipped": state["skipped"] + (~finite).astype(jnp.int32),
      "bad_streak": jnp.where(finite, 0, state["bad_streak"] + 1),
      "rng": jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 1)),
  }
  metrics = TrainMetrics.single_from_model_output(
      loss=loss_value, grad_norm=grad_norm, param_norm=optax.tree.norm(new_state["params"]),
      loss_tokens=aux["n_tokens"], skipped=(~finite).astype(jnp.float32))
  return new_state, metrics


def eval_step(params, batch, **loss_kw) -> dict:
  """Per-frame loss sums of a held-out batch: {"loss_sum"/"n_tokens": [max_frames]} (frame index
  from the batch's `frame` field) for the frame-wise loss the paper studies."""
  n_frames = loss_kw.pop("max_frames")
  graphdef, model_cfg, chunk = loss_kw["graphdef"], loss_kw["model_cfg"], loss_kw["loss_chunk"]
  model = nnx.merge(graphdef, params)
  positions = rope.rope_positions(batch["positions"], batch["index"], model_cfg.rope_variant)
  hidden = model(batch["inputs"], positions, batch["k_start"], batch["k_end"])
  sums, counts = [], []
  for f in range(n_frames):
    w = batch["weights"] * (batch["frame"] == f)
    _, aux = loss.chunked(hidden, model.head_visual[...], batch["targets"], w,
                          visual_offset=model_cfg.visual_offset, chunk=chunk)
    sums.append(aux["loss_sum"])
    counts.append(aux["n_tokens"])
  return {"loss_sum": jnp.stack(sums), "n_tokens": jnp.stack(counts)}


@dataclasses.dataclass(frozen=True)
class Functions:
  """The jitted pieces of a run and the shardings they were compiled for."""
  step: Callable  # (state, batch) -> (state, metrics); donates the state
  eval: Callable  # (params, batch) -> per-frame loss sums
  init: Callable  # () -> a fresh state, sharded
  init_with: Callable  # (params) -> a fresh state (step 0, new optimizer) around given params
  abstract_state: dict
  state_sh: dict
  param_sh: object
  batch_sh: dict


def build_functions(cfg, mesh, model_cfg) -> Functions:
  """jax.jit the train/eval/init functions with explicit shardings on `mesh` (nothing runs)."""
  tx = optim.make(cfg.optim, cfg.steps)
  graphdef, abstract_params = model_lib.abstract_model(model_cfg)
  abstract_state, state_sh = state_lib.abstract_state(abstract_params, tx, cfg.seed, mesh)
  param_sh = state_sh["params"]
  batch_sh = {k: jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, 3 if k == "positions"
                                                                       else 2))
              for k in pipeline.FIELDS}
  loss_kw = dict(graphdef=graphdef, model_cfg=model_cfg, loss_chunk=cfg.loss_chunk)
  step = jax.jit(lambda s, b: train_step(s, b, tx=tx, accum_steps=cfg.optim.accum_steps,
                                                  **loss_kw),
                 in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                 donate_argnums=0)
  evaluate_fn = jax.jit(lambda p, b: eval_step(p, b, max_frames=cfg.data.max_frames,
                                                        **loss_kw),
                        in_shardings=(param_sh, batch_sh))
  init = jax.jit(lambda: state_lib.init_state(model_lib.init_model(model_cfg, cfg.seed)[1], tx,
                                              cfg.seed), out_shardings=state_sh)
  init_with = jax.jit(lambda p: state_lib.init_state(p, tx, cfg.seed), in_shardings=(param_sh,),
                      out_shardings=state_sh)
  return Functions(step, evaluate_fn, init, init_with, abstract_state, state_sh, param_sh,
                   batch_sh)


GiB = 2 ** 30


def abstract_batch(cfg, batch_sh: dict) -> dict:
  """ShapeDtypeStructs of one global batch (for AOT lowering: nothing is allocated)."""
  b, length = cfg.data.batch_size, cfg.data.seq_len
  dtypes = {"weights": jnp.float32, "valid": jnp.bool_}
  return {k: jax.ShapeDtypeStruct((b, length, 3) if k == "positions" else (b, length),
                                  dtypes.get(k, jnp.int32), sharding=batch_sh[k])
          for k in pipeline.FIELDS}


# Of an accelerator's allocator limit, the share a compiled step may claim. XLA's autotuner and
# the allocator's fragmentation need the rest: on an H200 (125.8 GiB limit) the 1B step at 32k
# tokens with remat "none", 110.1 GiB by memory_analysis(), failed to compile (autotuning OOM).
ACCELERATOR_SHARE = 0.8


def device_memory_gib(device) -> float:
  """What one device's step may use: ACCELERATOR_SHARE of its allocator limit where it reports one
  (GPU, TPU), else 80% of the host's RAM shared by the host's devices (CPU)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return ACCELERATOR_SHARE * stats["bytes_limit"] / GiB
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return 0.8 * ram / jax.local_device_count() / GiB


def step_memory_gib(compiled) -> float:
  """Per-device bytes of a compiled step: arguments + outputs not aliased to them + temporaries."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes) / GiB


def choose_remat(cfg, mesh, model_cfg: ModelConfig) -> ModelConfig:
  """`model.remat="auto"` -> the first (fastest) policy of model.REMAT_POLICIES whose compiled
  train step fits `cfg.memory_budget_gib` per device (0: `device_memory_gib`), by XLA's
  `memory_analysis()` of the step lowered with abstract inputs; any other value is kept.
  Each candidate costs one compilation; one that runs out of memory while compiling does not fit.
  `functions_for` also keeps the chosen one's executable."""
  return functions_for(cfg, mesh, model_cfg)[0] if model_cfg.remat == "auto" else model_cfg


def functions_for(cfg, mesh, model_cfg: ModelConfig) -> tuple[ModelConfig, Functions]:
  """(model config, `build_functions` of it) with `model.remat="auto"` resolved as `choose_remat`
  says. The chosen policy's `step` is then the executable compiled for its memory analysis: a jit
  does not reuse an AOT compilation, so running the jitted step would compile it a second time
  (8 s of 16 for the tiny config on CPU; minutes at 1B). It takes exactly the abstract state and
  batch it was compiled for (`abstract_batch`), as the trainer's batches are."""
  if model_cfg.remat != "auto":
    return model_cfg, build_functions(cfg, mesh, model_cfg)
  budget = cfg.memory_budget_gib or device_memory_gib(jax.local_devices()[0])
  tried = []
  for name, remat in model_lib.REMAT_POLICIES.items():
    if not remat.runs_on(jax.default_backend()):
      continue
    candidate = dataclasses.replace(model_cfg, remat=name)
    fns = build_functions(cfg, mesh, candidate)
    try:
      with jax.set_mesh(mesh):
        state = checkpoint.abstract_like(fns.abstract_state, fns.state_sh)
        compiled = fns.step.lower(state, abstract_batch(cfg, fns.batch_sh)).compile()
    except jax.errors.JaxRuntimeError as e:
      # XLA's GPU autotuner runs candidate kernels while compiling; a policy that keeps too much
      # fails there (H200, 1B xla_scan, "none") before memory_analysis() can say so.
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      tried.append(f"{name} out of memory while compiling")
      continue
    need = step_memory_gib(compiled)
    tried.append(f"{name} {need:.3f} GiB")
    if need <= budget:
      logging.getLogger(__name__).info("model.remat=auto: %s (budget %.2f GiB/device; tried %s)",
                                       name, budget, ", ".join(tried))
      return candidate, dataclasses.replace(fns, step=compiled)
  raise ValueError(f"model.remat='auto': no policy fits memory_budget_gib={budget:.2f} per device "
                   f"({', '.join(tried)}): raise the budget, shard more (mesh), or shorten "
                   "data.seq_len / data.batch_size")
