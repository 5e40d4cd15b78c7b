"""Logical axis names -> mesh axes, the device mesh, and activation sharding constraints.

Parameters carry logical axis names (`out_sharding` metadata, e.g. ("embed", "mlp")); `RULES` maps
each name to mesh axes. Sharding is data: change the table, not the model. Mesh axes are
("data", "fsdp", "tensor"); names a mesh lacks are dropped, so the same model runs on any mesh.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

RULES = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
)


def logical_to_spec(names: Sequence[str | None], mesh_axes: Sequence[str], rules=RULES) -> P:
  """PartitionSpec for logical `names` on a mesh with `mesh_axes` (unknown mesh axes dropped)."""
  table = dict(rules)
  spec, used = [], set()
  for name in names:
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no sharding rule; add it to sharding.RULES")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a in mesh_axes and a not in used)
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else (axes or None))
  return P(*spec)


def resolve_mesh_shape(shape: Sequence[int], n_devices: int,
                       axes: Sequence[str] = MESH_AXES) -> tuple[int, ...]:
  """Mesh sizes with the one optional -1 entry absorbing the devices the others leave."""
  shape = list(shape)
  if len(shape) != len(axes):
    raise ValueError(f"mesh shape {tuple(shape)} needs one size per axis {tuple(axes)}")
  if shape.count(-1) > 1 or any(s < 1 and s != -1 for s in shape):
    raise ValueError(f"mesh shape {tuple(shape)}: sizes must be positive, at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise ValueError(f"mesh shape {tuple(shape)}: {n_devices} devices are not divisible by "
                       f"{known}")
    shape[shape.index(-1)] = n_devices // known
  if math.prod(shape) != n_devices:
    raise ValueError(f"mesh shape {dict(zip(axes, shape))} needs {math.prod(shape)} devices, "
                     f"have {n_devices}")
  return tuple(shape)


def make_mesh(shape: Sequence[int], axes: Sequence[str] = MESH_AXES, devices=None) -> Mesh:
  """A mesh over `devices` (default: all) with one optional -1 entry absorbing the rest."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh(resolve_mesh_shape(shape, len(devices), axes), tuple(axes),
                       axis_types=(AxisType.Auto,) * len(axes), devices=devices)


def param_specs(state: nnx.State, mesh: Mesh, rules=RULES):
  """PartitionSpec tree for a parameter state whose variables carry logical `out_sharding`."""
  logical = nnx.get_partition_spec(state)
  return jax.tree.map(lambda s: logical_to_spec(tuple(s), mesh.axis_names, rules), logical,
                      is_leaf=lambda x: isinstance(x, P))


def named_shardings(specs, mesh: Mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def constrain(x, names: Sequence[str | None], rules=RULES):
  """with_sharding_constraint by logical names under the current mesh (`jax.set_mesh`); a no-op
  without one, so single-device code and tests need no mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, mesh.axis_names, rules))


def batch_spec(mesh: Mesh, ndim: int) -> P:
  """Batch arrays [B, ...] shard their first axis over the data axes."""
  return logical_to_spec(("act_batch",) + (None,) * (ndim - 1), mesh.axis_names)



def per_shard(fn, q, k, v, k_start, k_end, rules=RULES):
  """`fn(q, k, v, k_start, k_end)` inside `jax.shard_map` over batch and heads under the current
  mesh (XLA does not partition a Pallas or custom-call kernel; each device runs it on its own
  batch rows and heads). q/k/v [B, L, H, D], key ranges [B, L]; without a mesh, `fn` itself.
  The heads split into contiguous groups, so a query-head shard keeps its GQA key/value heads."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn(q, k, v, k_start, k_end)
  heads = logical_to_spec(("act_batch", "act_len", "act_heads", None), mesh.axis_names, rules)
  ranges = logical_to_spec(("act_batch", "act_len"), mesh.axis_names, rules)
  return jax.shard_map(fn, in_specs=(heads, heads, heads, ranges, ranges), out_specs=heads,
                       check_vma=False)(q, k, v, k_start, k_end)
