# XLA, NCCL and allocator settings for training on NVIDIA H100 (Hopper) GPUs with the pinned
# jaxlib 0.11.2. launch/slurm.sbatch sources it; for any other GPU run, source it first:
#
#   source launch/gpu_env.sh && python -m lumos_jax.train --config=... --workdir=...
#
# A variable already set in the environment keeps its value; XLA_FLAGS you set are appended after
# ours, and XLA takes the last value of a repeated flag, so yours win. Sourcing twice adds nothing.
# XLA aborts at start-up on a flag it does not know, and flag names change between jaxlib versions:
# tests/e2e/test_launch.py starts the pinned jaxlib with these flags; rerun it when the pin moves.

if [ -z "${LUMOS_GPU_ENV:-}" ]; then
  export LUMOS_GPU_ENV=1
  lumos_xla_flags=(
    # Overlap collectives with compute: the scheduler moves their starts early and their ends
    # late (collectives are asynchronous by default in this XLA).
    --xla_gpu_enable_latency_hiding_scheduler=true
    # FSDP inside the scanned layers: start the next layer's parameter all-gather and finish the
    # previous layer's gradient reduce-scatter across loop iterations.
    --xla_gpu_enable_pipelined_all_gather=true
    --xla_gpu_enable_pipelined_reduce_scatter=true
    --xla_gpu_enable_pipelined_all_reduce=true
    # Unroll the layer loop by two, so that a pipelined collective has a whole layer of compute to
    # hide behind (costs compile time and some memory; set =false if a model no longer fits).
    --xla_gpu_enable_while_loop_double_buffering=true
    # Fewer, larger NCCL calls: combine collectives up to 128 MiB (the defaults are far smaller).
    --xla_gpu_all_gather_combine_threshold_bytes=134217728
    --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728
    --xla_gpu_all_reduce_combine_threshold_bytes=134217728
  )
  export XLA_FLAGS="${lumos_xla_flags[*]}${XLA_FLAGS:+ $XLA_FLAGS}"
  unset lumos_xla_flags

  # JAX preallocates this fraction of each GPU's memory (default 0.75); the rest is left to CUDA,
  # cuBLAS/cuDNN workspaces and NCCL buffers. Lower it if NCCL or cuDNN run out of memory.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
  # One hardware work queue per device: kernels start in the order the scheduler chose, which
  # the latency-hiding schedule relies on (recommended for Hopper; not for Blackwell).
  export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
  # NCCL problems (a rank that cannot connect, a lost InfiniBand link) named in the log.
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  # Site-specific, left to the cluster: NCCL_SOCKET_IFNAME (the interface NCCL bootstraps over),
  # NCCL_IB_HCA / NCCL_IB_GID_INDEX (InfiniBand / RoCE), NCCL_NVLS_ENABLE (NVLink SHARP; on by
  # default where NVSwitch supports it, at some memory cost).
fi
