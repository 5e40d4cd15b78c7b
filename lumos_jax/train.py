"""Training: `python -m lumos_jax.train --config=configs/demo.py --workdir=DIR [--config.x=...]`.

Re-running the same command on the same workdir resumes from the latest checkpoint (state and
data iterator). Outputs in WORKDIR: `checkpoints/`, `metrics.jsonl` (one JSON line per logged
step, full float precision), TensorBoard event files in `tb/`, and for the synthetic dataset the
generated records in `data/`. SIGTERM saves a checkpoint and exits cleanly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import signal
import sys
import time
from typing import Callable

import jax
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from lumos_jax import checkpoint, config as config_lib, masking, optim, sharding, step as step_lib
from lumos_jax.data import pipeline, records

log = logging.getLogger("lumos_jax.train")


def validate(cfg, n_devices: int):
  """Checks a config before anything compiles; returns (mesh shape, model config, vocab)."""
  for field in ("steps", "checkpoint_every", "seed", "log_every"):
    if not isinstance(cfg.get(field), int):
      raise ValueError(f"config field {field} must be an int, got {cfg.get(field)!r}")
  shape = list(cfg.mesh)
  if len(shape) != 3 or shape.count(-1) > 1:
    raise ValueError(f"config field mesh={tuple(cfg.mesh)} must be (data, fsdp, tensor) with at "
                     "most one -1")
  known = math.prod(s for s in shape if s != -1)
  if n_devices % known or (-1 not in shape and known != n_devices):
    raise ValueError(f"config field mesh={tuple(cfg.mesh)} does not divide the {n_devices} devices")
  if -1 in shape:
    shape[shape.index(-1)] = n_devices // known
  model_cfg = config_lib.model_config(cfg)  # head_dim / MM-RoPE, GQA, vocabulary size
  batch_shards = shape[0] * shape[1]
  if cfg.data.batch_size % (batch_shards * cfg.optim.accum_steps):
    raise ValueError(f"config field data.batch_size={cfg.data.batch_size} must be divisible by "
                     f"the data axes (data x fsdp = {batch_shards}) times optim.accum_steps="
                     f"{cfg.optim.accum_steps}")
  if cfg.data.batch_size % jax.process_count():
    raise ValueError(f"config field data.batch_size={cfg.data.batch_size} must be divisible by "
                     f"the {jax.process_count()} processes")
  return tuple(shape), model_cfg, config_lib.vocab(cfg)


def setup_distributed(cfg):
  """jax.distributed.initialize when the config asks (coordinator/process count/id from the config
  or, left empty, from the cluster environment JAX understands: SLURM, TPU, Open MPI...)."""
  dist = cfg.get("distributed")
  if dist and dist.enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize(coordinator_address=dist.coordinator or None,
                               num_processes=dist.num_processes or None,
                               process_id=dist.process_id if dist.num_processes else None)


def data_sources(cfg, workdir: pathlib.Path, vocab):
  """(train sources, weights, eval source or None); generates the synthetic dataset if absent."""
  d = cfg.data
  if d.kind == "synthetic":
    from lumos_jax.data import __main__ as data_cli  # generation lives with the data CLI
    for split, count, seed in (("train", d.synthetic_count, d.synthetic_seed),
                               ("eval", d.synthetic_eval_count, d.synthetic_seed + 1)):
      path = workdir / "data" / split
      if jax.process_index() == 0 and not (path / records.METADATA).exists():
        data_cli.main(["synthetic", str(path), "--count", str(count), "--seed", str(seed)])
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("synthetic data written")
    train, weights, eval_dir = [workdir / "data" / "train"], None, workdir / "data" / "eval"
  elif d.kind == "records":
    train, weights, eval_dir = [pathlib.Path(p) for p in d.train], d.get("weights"), d.get("eval")
  else:
    raise ValueError(f"config field data.kind={d.kind!r}: expected 'synthetic' or 'records'")
  sources = [records.RecordSource(p) for p in train]
  for p, s in zip(train, sources):
    if s.vocab.size > vocab.size or s.vocab.visual_offset != vocab.visual_offset:
      raise ValueError(f"records in {p} use a vocabulary ({s.vocab.size} ids) that config field "
                       f"vocab={cfg.vocab!r} ({vocab.size} ids) does not match")
  return sources, weights, (records.RecordSource(eval_dir) if eval_dir else None)


def pipeline_config(cfg, *, eval_split: bool = False) -> pipeline.PipelineConfig:
  d = cfg.data
  return pipeline.PipelineConfig(
      seq_len=d.seq_len, batch_size=d.batch_size // jax.process_count(), seed=cfg.seed,
      max_frames=d.max_frames, mask=masking.MaskConfig(**d.mask),
      cfg_drop=0.0 if eval_split else d.cfg_drop, num_epochs=1 if eval_split else None,
      workers=0 if eval_split else d.workers, strides=tuple(d.strides),
      max_lookahead=cfg.model.max_lookahead)


def flops_per_token(model_cfg, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward, no remat): 6 x matmul parameters + attention
  (12 x layers x heads x head_dim x keys, keys ~ seq_len / 2 for block-causal attention)."""
  c = model_cfg
  layer = c.d_model * c.head_dim * (2 * c.n_heads + 2 * c.n_kv_heads) + 3 * c.d_model * c.mlp_dim
  matmul = c.n_layers * layer + c.d_model * (c.vocab_size - c.visual_offset)
  return 6 * matmul + 12 * c.n_layers * c.n_heads * c.head_dim * seq_len / 2


class MetricsWriter:
  """metrics.jsonl + TensorBoard on process 0; nothing elsewhere."""

  def __init__(self, workdir: pathlib.Path):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter
      self.jsonl = open(workdir / "metrics.jsonl", "a")
      self.tb = SummaryWriter(str(workdir / "tb"))

  def write(self, step: int, values: dict):
    if not self.active:
      return
    self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
    self.jsonl.flush()
    for k, v in values.items():
      self.tb.add_scalar(k, v, step)

  def close(self):
    if self.active:
      self.jsonl.close()
      self.tb.close()


def evaluate(eval_fn, params, source, cfg, vocab, batch_sh) -> dict:
  """Mean eval loss and loss per frame index over (at most cfg.eval_batches of) the eval split."""
  ds = pipeline.build([source], pipeline_config(cfg, eval_split=True), vocab)
  sums = counts = 0.0
  for i, batch in enumerate(ds):
    if i >= cfg.eval_batches:
      break
    out = jax.device_get(eval_fn(params, global_batch(batch, batch_sh)))
    sums, counts = sums + out["loss_sum"], counts + out["n_tokens"]
  per_frame = np.asarray(sums) / np.maximum(counts, 1)
  result = {"eval_loss": float(np.sum(sums) / max(np.sum(counts), 1))}
  result.update({f"eval_loss_frame{f}": float(v) for f, v in enumerate(per_frame)})
  return result


def global_batch(local: dict, shardings: dict) -> dict:
  """This process's numpy batch -> global jax.Arrays sharded over the data axes."""
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
          for k, v in local.items()}


def train(cfg, workdir) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the last logged metrics."""
  setup_distributed(cfg)
  if jax.process_index() != 0:
    log.setLevel(logging.WARNING)  # one process reports progress; warnings come from all
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh_shape, model_cfg, vocab = validate(cfg, jax.device_count())
  if jax.process_index() == 0:  # what `python -m lumos_jax.sample --workdir` rebuilds the model from
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  mesh = sharding.make_mesh(mesh_shape)
  sources, weights, eval_source = data_sources(cfg, workdir, vocab)
  data_iter = iter(pipeline.build(sources, pipeline_config(cfg), vocab, weights=weights))

  fns = build_functions(cfg, mesh, model_cfg)
  with jax.set_mesh(mesh):
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is None:
      state = fns.init()
    else:
      log.info("resuming from step %d in %s", latest, workdir)
      state = ckpt.restore(latest, checkpoint.abstract_like(fns.abstract_state, fns.state_sh),
                           data_iter)
    return _loop(cfg, workdir, state, fns, data_iter, eval_source, ckpt, model_cfg, vocab)


@dataclasses.dataclass(frozen=True)
class Functions:
  """The jitted pieces of a run and the shardings they were compiled for."""
  step: Callable  # (state, batch) -> (state, metrics); donates the state
  eval: Callable  # (params, batch) -> per-frame loss sums
  init: Callable  # () -> a fresh state, sharded
  abstract_state: dict
  state_sh: dict
  param_sh: object
  batch_sh: dict


def build_functions(cfg, mesh, model_cfg) -> Functions:
  """jax.jit the train/eval/init functions with explicit shardings on `mesh` (nothing runs)."""
  tx = optim.make(cfg.optim, cfg.steps)
  graphdef, abstract_params = step_lib.abstract_model(model_cfg)
  param_sh = sharding.named_shardings(sharding.param_specs(abstract_params, mesh), mesh)
  abstract_state = jax.eval_shape(lambda: step_lib.init_state(abstract_params, tx, cfg.seed))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state_sh = {k: replicated for k in abstract_state}
  state_sh["params"] = param_sh
  state_sh["opt"] = optax_shardings(tx, abstract_state["opt"], param_sh, replicated)
  batch_sh = {k: jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, 3 if k == "positions"
                                                                       else 2))
              for k in pipeline.FIELDS}
  loss_kw = dict(graphdef=graphdef, model_cfg=model_cfg, loss_chunk=cfg.loss_chunk)
  step = jax.jit(lambda s, b: step_lib.train_step(s, b, tx=tx, accum_steps=cfg.optim.accum_steps,
                                                  **loss_kw),
                 in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                 donate_argnums=0)
  evaluate_fn = jax.jit(lambda p, b: step_lib.eval_step(p, b, max_frames=cfg.data.max_frames,
                                                        **loss_kw),
                        in_shardings=(param_sh, batch_sh))
  init = jax.jit(lambda: step_lib.init_state(step_lib.init_params(model_cfg, cfg.seed)[1], tx,
                                             cfg.seed), out_shardings=state_sh)
  return Functions(step, evaluate_fn, init, abstract_state, state_sh, param_sh, batch_sh)


def optax_shardings(tx, abstract_opt, param_sh, replicated):
  """Optimizer-state shardings: moments like their parameters, everything else replicated."""
  return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                               transform_non_params=lambda _: replicated)


def _loop(cfg, workdir, state, fns: Functions, data_iter, eval_source, ckpt, model_cfg,
          vocab) -> dict:
  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
  writer = MetricsWriter(workdir)
  step = int(jax.device_get(state["step"]))
  tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
  flops = flops_per_token(model_cfg, cfg.data.seq_len)
  last, t_last, steps_since, window = {}, time.perf_counter(), 0, None
  if step == 0 and eval_source is not None and cfg.eval_every:  # the initial validation loss
    writer.write(0, evaluate(fns.eval, state["params"], eval_source, cfg, vocab, fns.batch_sh))
  try:
    while step < cfg.steps and stop["signal"] is None:
      if cfg.profile_steps and step == cfg.profile_steps[0] and jax.process_index() == 0:
        jax.profiler.start_trace(str(workdir / "profile"))  # view with TensorBoard / Perfetto
      state, metrics = fns.step(state, global_batch(next(data_iter), fns.batch_sh))
      window = metrics if window is None else window.merge(metrics)
      step += 1
      if cfg.profile_steps and step == cfg.profile_steps[1] and jax.process_index() == 0:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
      steps_since += 1
      logged = step % cfg.log_every == 0 or step == cfg.steps
      if logged:
        means = {k: float(v) for k, v in jax.device_get(window.compute()).items()}
        now = time.perf_counter()
        sps = steps_since / (now - t_last)
        t_last, steps_since, window = now, 0, None
        last = {**means, "lr": float(optim.schedule(cfg.optim, cfg.steps)(step - 1)),
                "steps_per_sec": sps, "tokens_per_sec": sps * tokens_per_step,
                "skipped": int(jax.device_get(state["skipped"]))}
        if cfg.peak_flops_per_device:
          last["mfu"] = (sps * tokens_per_step * flops
                         / (cfg.peak_flops_per_device * jax.device_count()))
        writer.write(step, last)
        log.info("step %d/%d loss %.4f grad_norm %.3f lr %.2e %.2f steps/s %.0f tokens/s "
                 "ETA %.0f s", step, cfg.steps, last["loss"], last["grad_norm"], last["lr"], sps,
                 last["tokens_per_sec"], (cfg.steps - step) / max(sps, 1e-9))
      checkpoint_now = (step % cfg.checkpoint_every == 0 or step == cfg.steps
                        or stop["signal"] is not None)
      # Reading device values syncs the host with the device: only where we log or save anyway.
      bad = int(jax.device_get(state["bad_streak"])) if logged or checkpoint_now else 0
      if bad > cfg.max_bad_steps:
        raise RuntimeError(f"{bad} consecutive steps had a non-finite loss or gradient (limit "
                           f"config field max_bad_steps={cfg.max_bad_steps}); stopping at step "
                           f"{step}. The last checkpoint holds finite parameters.")
      if eval_source is not None and cfg.eval_every and step % cfg.eval_every == 0:
        result = evaluate(fns.eval, state["params"], eval_source, cfg, vocab, fns.batch_sh)
        writer.write(step, result)
        log.info("step %d eval %s", step, json.dumps(result))
      if checkpoint_now:
        ckpt.save(step, state, data_iter, force=True)
    if stop["signal"] is not None:
      log.warning("signal %s: saved a checkpoint at step %d, exiting", stop["signal"], step)
  finally:
    ckpt.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous)
  return last


def main(argv):
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/grain chatter at INFO
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  if flags.FLAGS.workdir is None or flags.FLAGS.config is None:
    raise app.UsageError("--config=configs/<name>.py and --workdir=DIR are required")
  train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
  flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and data")
  app.run(main)
