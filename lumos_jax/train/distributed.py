"""Multi-process start-up: jax.distributed from the config or the cluster environment."""
import jax


def setup_distributed(cfg):
  """jax.distributed.initialize when the config asks (coordinator/process count/id from the config
  or, left empty, from the cluster environment JAX understands: SLURM, TPU, Open MPI...)."""
  dist = cfg.get("distributed")
  if dist and dist.enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize(coordinator_address=dist.coordinator or None,
                               num_processes=dist.num_processes or None,
                               process_id=dist.process_id if dist.num_processes else None)
