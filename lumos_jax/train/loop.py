"""The training loop: `train(cfg, workdir)` builds the data, restores or initialises the state, runs
the jitted step with evaluation, logging and checkpoints, and stops cleanly on SIGTERM / SIGINT
(every process at the same step).
"""
from __future__ import annotations

import json
import logging

import jax
import numpy as np
from clu import parameter_overview
from etils import epath
from flax import nnx

from lumos_jax import checkpoint, config as config_lib, masking, sharding
from lumos_jax.data import pipeline, records
from lumos_jax.synthetic import dataset as synthetic
from lumos_jax.train import checkpointer, distributed, init_from, metrics, optim
from lumos_jax.train.step import Functions, functions_for

log = logging.getLogger("lumos_jax.train")
EVAL_SEED = 0  # the eval split's shuffle and masks (== the default cfg.seed: old eval losses hold)


def data_sources(cfg, workdir: epath.Path, vocab):
  """(train sources, weights, eval source or None); generates the synthetic dataset if absent."""
  d = cfg.data
  if d.kind == "synthetic":
    if "://" in str(workdir):  # ArrayRecord shards are written through local files
      raise ValueError(f"config field data.kind='synthetic' writes its records into WORKDIR/data, "
                       f"which must be a local or mounted directory, not {workdir}")
    written = synthetic.written_config(cfg)
    for split, count, seed in (("train", d.synthetic_count, d.synthetic_seed),
                               ("eval", d.synthetic_eval_count, d.synthetic_seed + 1)):
      path = workdir / "data" / split
      if jax.process_index() == 0:
        if (path / records.METADATA).exists():
          synthetic.check_written(path, count, seed, written)
        else:
          synthetic.write(path, count, seed, written)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("synthetic data written")
    train, weights, eval_dir = [workdir / "data" / "train"], None, workdir / "data" / "eval"
  elif d.kind == "records":
    train, weights, eval_dir = [epath.Path(p) for p in d.train], d.get("weights"), d.get("eval")
  elif d.kind == "tfds":  # imported here: tensorflow_datasets only for runs that read TFDS
    from lumos_jax.data import tfds as tfds_data
    train_source, eval_source = tfds_data.sources_from_config(d)
    sources, weights = [train_source], None
  else:
    raise ValueError(f"config field data.kind={d.kind!r}: expected 'synthetic', 'records' or "
                     "'tfds'")
  if d.kind != "tfds":
    sources = [records.RecordSource(p) for p in train]
    eval_source = records.RecordSource(eval_dir) if eval_dir else None
  for s in sources + ([] if eval_source is None else [eval_source]):
    if s.vocab.size > vocab.size or s.vocab.visual_offset != vocab.visual_offset:
      raise ValueError(f"{s!r} uses a vocabulary ({s.vocab.size} ids) that config field "
                       f"vocab={cfg.vocab!r} ({vocab.size} ids) does not match")
  return sources, weights, eval_source


def pipeline_config(cfg, *, eval_split: bool = False) -> pipeline.PipelineConfig:
  d = cfg.data
  return pipeline.PipelineConfig(
      seq_len=d.seq_len, batch_size=d.batch_size // jax.process_count(),
      # one eval order and mask set for every run, so eval losses of different seeds compare
      seed=EVAL_SEED if eval_split else cfg.seed,
      max_frames=d.max_frames, mask=masking.MaskConfig(**d.mask),
      cfg_drop=0.0 if eval_split else d.cfg_drop, num_epochs=1 if eval_split else None,
      workers=0 if eval_split else d.workers, strides=tuple(d.strides),
      max_lookahead=cfg.model.max_lookahead,
      max_consecutive_bad=d.max_consecutive_bad, pack=d.pack,
      # the eval loss stays the plain token mean, comparable across runs
      background_code=-1 if eval_split else d.background_code,
      background_weight=d.background_weight)


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
  """Trains (or resumes) the run in `workdir`; returns the last logged metrics. A bad config
  raises config.ConfigError (every problem, one line each) before data, state or compilation.

  SIGTERM and SIGINT are honoured from the start (see `distributed.StopRequest`): before the
  first step is dispatched a single process exits at once (nothing new to save; a call into XLA
  such as a compilation finishes first), later it saves the step it stopped at and returns. With
  several processes the decision is taken together at the first step, log and checkpoint steps
  and every distributed.STOP_CHECK_EVERY steps, so every process saves the same step and exits.
  """
  stop = distributed.StopRequest()
  stop.install()
  try:
    return _train(cfg, workdir, stop)
  except distributed.Interrupted as e:
    log.warning("signal %d before the first step of this run completed: nothing new to save, "
                "exiting", e.signum)
    return {}
  finally:
    stop.restore()


def _train(cfg, workdir, stop) -> dict:
  config_lib.check_fields(cfg)  # before distributed setup and the workdir
  distributed.setup_distributed(cfg)
  stop.install()  # again: jax.distributed's preemption notifier takes over SIGTERM
  if jax.process_count() > 1:  # a lone exit would leave the others waiting in a collective (and
    stop.urgent = False        # itself in jax.distributed's shutdown barrier): stop together
  distributed.preflight(cfg, workdir)  # logs each process's devices; same config everywhere
  if jax.process_index() != 0:
    log.setLevel(logging.WARNING)  # one process reports progress; warnings come from all
  workdir = epath.Path(workdir)  # gs://bucket/run keeps its scheme
  workdir.mkdir(parents=True, exist_ok=True)
  mesh_shape, model_cfg, vocab = config_lib.validate(cfg, jax.device_count(), jax.process_count())
  if jax.process_index() == 0:  # what `python -m lumos_jax.sample` rebuilds the model from
    config_lib.save_run(cfg, workdir)
  mesh = sharding.make_mesh(mesh_shape)
  sources, weights, eval_source = data_sources(cfg, workdir, vocab)
  data_iter = iter(pipeline.build(sources, pipeline_config(cfg), vocab, weights=weights))

  model_cfg, fns = functions_for(cfg, mesh, model_cfg)  # remat="auto" resolved, compiled once
  with jax.set_mesh(mesh):
    ckpt = checkpointer.Checkpointer(checkpoint.directory(workdir), keep=cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is None:
      state = init_from.fresh_state(cfg, fns)
      log.info("parameters:\n%s", parameter_overview.get_parameter_overview(
          nnx.to_pure_dict(state["params"]), include_stats=False))
    else:
      log.info("resuming from step %d in %s", latest, workdir)
      state = ckpt.restore(latest, checkpoint.abstract_like(fns.abstract_state, fns.state_sh),
                           data_iter)
    return _loop(cfg, workdir, state, fns, data_iter, eval_source, ckpt, model_cfg, vocab, stop)


def _loop(cfg, workdir, state, fns: Functions, data_iter, eval_source, ckpt, model_cfg,
          vocab, stop: distributed.StopRequest) -> dict:
  stopping = False
  writer = metrics.MetricsWriter(workdir)
  window = metrics.LogWindow(cfg, model_cfg, optim.schedule(cfg.optim, cfg.steps))
  step, last = int(jax.device_get(state["step"])), {}
  first_step = step + 1  # the stop flag is checked there too: a signal during set-up acts soon
  profile_first, profile_stop = cfg.profile_steps or (-1, -1)
  tracing = False
  every = lambda n: bool(n) and step % n == 0

  def run_eval():
    result = evaluate(fns.eval, state["params"], eval_source, cfg, vocab, fns.batch_sh)
    writer.write(step, result)
    log.info("step %d eval %s", step, json.dumps(result))

  if step == 0 and eval_source is not None and cfg.eval_every:  # the initial validation loss
    run_eval()
  try:
    while step < cfg.steps and not stopping:
      if step == profile_first and jax.process_index() == 0:  # view with TensorBoard/Perfetto
        jax.profiler.start_trace(str(workdir / "profile"))
        tracing = True
      state, step_metrics = fns.step(state, global_batch(next(data_iter), fns.batch_sh))
      stop.urgent = False  # a step is dispatched: from now on a signal saves it
      window.add(step_metrics)
      step += 1
      if tracing and step == profile_stop:
        tracing = _stop_trace(state)
      logged = every(cfg.log_every) or step == cfg.steps
      if logged:
        last = window.flush(step, state)
        writer.write(step, last)
        log.info("step %d/%d loss %.4f grad_norm %.3f lr %.2e %.2f steps/s %.0f tokens/s "
                 "ETA %.0f s", step, cfg.steps, last["loss"], last["grad_norm"], last["lr"],
                 last["steps_per_sec"], last["tokens_per_sec"],
                 (cfg.steps - step) / max(last["steps_per_sec"], 1e-9))
      scheduled = every(cfg.checkpoint_every) or step == cfg.steps
      # Checked at the same steps on every process (an all-gather where there are several), so
      # all of them stop, and save, at one step.
      stopping = stop.agreed(logged or scheduled or step == first_step
                             or every(distributed.STOP_CHECK_EVERY))
      checkpoint_now = scheduled or stopping
      # Reading device values syncs the host with the device: only where we log or save anyway.
      if logged or checkpoint_now:
        _check_finite(cfg, state, step)
      if eval_source is not None and every(cfg.eval_every):
        run_eval()
      if checkpoint_now:
        ckpt.save(step, state, data_iter, force=True)
    if stopping:
      log.warning("%s: saved a checkpoint at step %d, exiting", stop.describe(), step)
  finally:
    if tracing:  # an early stop or an error inside the traced steps
      jax.profiler.stop_trace()
    ckpt.close()
    writer.close()
  return last


def _stop_trace(state) -> bool:
  """Stops the profiler trace once the traced steps are done; returns False (no trace running)."""
  jax.block_until_ready(state)
  jax.profiler.stop_trace()
  return False


def _check_finite(cfg, state, step: int) -> None:
  """Stops the run after more than max_bad_steps consecutive skipped (non-finite) updates."""
  bad = int(jax.device_get(state["bad_streak"]))
  if bad > cfg.max_bad_steps:
    raise RuntimeError(f"{bad} consecutive steps had a non-finite loss or gradient (limit "
                       f"config field max_bad_steps={cfg.max_bad_steps}); stopping at step "
                       f"{step}. The last checkpoint holds finite parameters.")
