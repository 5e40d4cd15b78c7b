"""The training state: a plain pytree, and its abstract form and shardings on a mesh.

  params     the decoder's parameters: an `nnx.State` of float32 arrays
  opt        the optax state
  step       int32, batches consumed (applied or skipped)
  skipped    int32, updates skipped because the loss or a gradient was not finite
  bad_streak int32, consecutive skipped updates (the loop stops the run past a limit)
  rng        a PRNG key, advanced every step (the step itself draws nothing: masking is data)
"""
import jax
import jax.numpy as jnp
import optax

from lumos_jax import sharding


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict:
  """A fresh state around `params` (arrays or, under eval_shape, shape structs)."""
  zero = jnp.zeros((), jnp.int32)
  return {"params": params, "opt": tx.init(params), "step": zero, "skipped": zero,
          "bad_streak": zero, "rng": jax.random.key_data(jax.random.key(seed))}


def abstract_state(abstract_params, tx: optax.GradientTransformation, seed: int, mesh):
  """(abstract state, its shardings on `mesh`): parameters by the logical-axis rules, optimizer
  moments like their parameters, everything else replicated. Nothing is allocated."""
  param_sh = sharding.named_shardings(sharding.param_specs(abstract_params, mesh), mesh)
  abstract = jax.eval_shape(lambda: init_state(abstract_params, tx, seed))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = {k: replicated for k in abstract}
  shardings["params"] = param_sh
  shardings["opt"] = optax.tree_map_params(tx, lambda _, s: s, abstract["opt"], param_sh,
                                           transform_non_params=lambda _: replicated)
  return abstract, shardings
