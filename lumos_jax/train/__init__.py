"""Training: the state, the pure train step and its jit wiring, optimizer, checkpoints, metrics, the
loop, and the `python -m lumos_jax.train` command.

  state.py        the training state pytree, its abstract form and shardings
  step.py         train_step / eval_step (pure) and build_functions (their jit wiring)
  optim.py        AdamW, clipping, warmup + cosine/constant schedule
  checkpointer.py orbax checkpoints of the state with the data-iterator position
  metrics.py      metrics.jsonl + TensorBoard, FLOPs per token (MFU)
  distributed.py  jax.distributed start-up and the preflight (same config on every process)
  loop.py         train(cfg, workdir): data, restore, the step loop, eval, saves
  __main__.py     the command line
"""
