"""The type and range of every field of a training config (`config.base()`), checked at once.

`field_errors(cfg)` returns {field path: one line naming the field, its value and what is
expected} for every bad or missing field; `config.validate` adds the checks that need the devices
or several fields together and raises `config.ConfigError` with all the lines.
`unknown_key_errors` explains command-line overrides of keys the config does not have.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Sequence

from lumos_jax import attention, masking, rope
from lumos_jax.model import REMAT_NAMES, ModelConfig

VOCABS = ("lumos", "compact")
DATA_KINDS = ("records", "synthetic", "tfds")
OPTIM_SCHEDULES = ("cosine", "constant")  # = lumos_jax.train.optim.SCHEDULES (a test checks)
DTYPES = ("float32", "bfloat16", "float16")

Check = tuple[Callable[[object], bool], str]  # (predicate on the value, what is expected)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(lo: int) -> Check:
  return (lambda v: _is_int(v) and v >= lo), f"an int >= {lo}"


def _num(lo: float, hi: float = math.inf, *, lo_open=False, hi_open=False) -> Check:
  """A finite number in the interval lo..hi (open or closed at each end)."""
  def pred(v):
    return (_is_num(v) and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi))
  if hi == math.inf:
    return pred, f"a number {'>' if lo_open else '>='} {lo:g}"
  return pred, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _choice(choices: Sequence[str]) -> Check:
  return (lambda v: v in tuple(choices)), f"one of {tuple(choices)}"


def _is_seq(v) -> bool:
  return isinstance(v, (tuple, list))


_BOOL: Check = (lambda v: isinstance(v, bool)), "True or False"
_STR: Check = (lambda v: isinstance(v, str)), "a string"
_OPT_STR: Check = (lambda v: v is None or isinstance(v, str)), "None or a string"
_STRIDES: Check = ((lambda v: _is_seq(v) and len(v) == 3 and all(_is_int(x) and x >= 1 for x in v)),
                   "3 positive ints (t, h, w)")
_MESH: Check = ((lambda v: _is_seq(v) and len(v) == 3
                 and all(_is_int(x) and (x >= 1 or x == -1) for x in v)),
                "3 ints (data, fsdp, tensor), each >= 1 or -1")
_PROFILE: Check = ((lambda v: _is_seq(v) and (len(v) == 0 or (
    len(v) == 2 and all(_is_int(x) for x in v) and 0 <= v[0] < v[1]))),
                   "() or (first, stop) ints with 0 <= first < stop")
_PATHS: Check = (lambda v: _is_seq(v) and all(isinstance(x, str) for x in v)), "a tuple of paths"
_WEIGHTS: Check = ((lambda v: v is None or (_is_seq(v) and all(_num(0)[0](x) for x in v))),
                   "None or a tuple of numbers >= 0 (one per data.train directory)")
_SIZES: Check = ((lambda v: _is_seq(v) and all(_is_int(x) and x >= 1 and x % 2 for x in v)),
                 "() or a tuple of odd ints >= 1 (shape widths in cells)")
_SPEEDS: Check = ((lambda v: _is_seq(v) and all(_is_int(x) and x >= 1 for x in v)),
                  "() or a tuple of ints >= 1 (pixels per frame)")
_DEVICE_IDS: Check = ((lambda v: _is_seq(v) and all(_is_int(x) and x >= 0 for x in v)),
                      "a tuple of ints >= 0")

FIELDS: dict[str, Check] = {
    "seed": _int(0), "steps": _int(1), "checkpoint_every": _int(1), "keep_checkpoints": _int(1),
    "log_every": _int(1), "eval_every": _int(0), "eval_batches": _int(1),
    "max_bad_steps": _int(0), "loss_chunk": _int(1), "peak_flops_per_device": _num(0),
    "memory_budget_gib": _num(0),
    "profile_steps": _PROFILE, "init_from": _STR, "vocab": _choice(VOCABS), "mesh": _MESH,
    "model.vocab_size": _int(1), "model.visual_offset": _int(1), "model.d_model": _int(1),
    "model.n_layers": _int(1), "model.n_heads": _int(1), "model.n_kv_heads": _int(1),
    "model.head_dim": _int(1), "model.mlp_dim": _int(1),
    "model.rope_variant": _choice(rope.VARIANTS), "model.rope_theta": _num(0, lo_open=True),
    "model.norm_eps": _num(0, lo_open=True), "model.dtype": _choice(DTYPES),
    "model.remat": _choice(sorted(REMAT_NAMES)),
    "model.attention": _choice(sorted(attention.MODEL_NAMES)),
    "model.attention_block_q": _int(1), "model.max_lookahead": _int(0),
    "model.init_std": _num(0, lo_open=True),
    "optim.lr": _num(0, lo_open=True), "optim.min_lr": _num(0), "optim.warmup_steps": _int(0),
    "optim.schedule": _choice(OPTIM_SCHEDULES), "optim.b1": _num(0, 1, hi_open=True),
    "optim.b2": _num(0, 1, hi_open=True), "optim.eps": _num(0, lo_open=True),
    "optim.weight_decay": _num(0), "optim.clip": _num(0), "optim.accum_steps": _int(1),
    "data.kind": _choice(DATA_KINDS), "data.train": _PATHS, "data.weights": _WEIGHTS,
    "data.eval": _OPT_STR, "data.synthetic_count": _int(1), "data.synthetic_eval_count": _int(1),
    "data.synthetic_seed": _int(0),
    "data.synthetic_distractors": _int(0), "data.synthetic_sizes": _SIZES,
    "data.synthetic_speeds": _SPEEDS,
    "data.synthetic_frame_px": _int(0), "data.synthetic_frames": _int(0),
    "data.synthetic_cells_per_patch": _int(0),
    "data.tfds_name": _STR, "data.tfds_data_dir": _STR,
    "data.tfds_train_split": _STR, "data.tfds_eval_split": _STR, "data.seq_len": _int(1),
    "data.batch_size": _int(1), "data.max_frames": _int(1), "data.cfg_drop": _num(0, 1),
    "data.workers": _int(0), "data.strides": _STRIDES, "data.max_consecutive_bad": _int(1),
    "data.pack": _BOOL, "data.background_code": _int(-1), "data.background_weight": _num(0, 1),
    "data.mask.kind": _choice(masking.KINDS), "data.mask.schedule": _choice(masking.SCHEDULES),
    "data.mask.min_ratio": _num(0, 1), "data.mask.history_prob": _num(0, 1),
    "data.mask.history_ratio": _num(0, 1),
    "distributed.enabled": _BOOL, "distributed.coordinator": _STR,
    "distributed.num_processes": _int(0), "distributed.process_id": _int(0),
    "distributed.local_device_ids": _DEVICE_IDS, "distributed.cluster_detection_method": _STR,
    "distributed.coordinator_bind_address": _STR, "distributed.initialization_timeout": _int(0),
    "distributed.heartbeat_timeout_seconds": _int(0),
    "distributed.shutdown_timeout_seconds": _int(0),
}
_MISSING = object()


def get(cfg, path: str):
  """The value at a dotted path of a config (nested ConfigDicts or dicts), or _MISSING."""
  value = cfg
  for key in path.split("."):
    if not hasattr(value, "keys") or key not in value:
      return _MISSING
    value = value[key]
  return value


def field_errors(cfg) -> dict[str, str]:
  """{field path: error line} for every field of FIELDS that is missing or out of its range, and
  for model keys the decoder does not take; empty when every field is well-formed."""
  errors = {}
  for path, (pred, expected) in FIELDS.items():
    value = get(cfg, path)
    if value is _MISSING:
      errors[path] = f"config field {path} is missing: expected {expected}"
    elif not pred(value):
      errors[path] = f"config field {path}={_show(value)}: expected {expected}"
  model = get(cfg, "model")
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  for key in sorted(set(model.keys()) - known) if hasattr(model, "keys") else ():
    errors[f"model.{key}"] = (f"config field model.{key}={_show(model[key])}: not a model field; "
                              f"expected one of {sorted(known)}")
  return errors


def _show(value) -> str:
  return repr(tuple(value) if isinstance(value, list) else value)


def flat_keys(cfg, prefix: str = "") -> list[str]:
  """Every dotted key path of a config, inner sections included ("optim", "optim.lr", ...)."""
  keys = []
  for key in cfg.keys():
    path = f"{prefix}{key}"
    keys.append(path)
    if hasattr(cfg[key], "keys"):
      keys.extend(flat_keys(cfg[key], f"{path}."))
  return keys


def unknown_key_errors(cfg, overrides: Sequence[str]) -> list[str]:
  """One line for each override path ("optim.lrr") that `cfg` does not have, with the closest
  known keys (difflib) suggested."""
  known = flat_keys(cfg)
  errors = []
  for path in overrides:
    if get(cfg, path) is _MISSING:
      close = difflib.get_close_matches(path, known, n=3, cutoff=0.6)
      hint = f"; did you mean {' or '.join(close)}?" if close else ""
      errors.append(f"--config.{path}: the config has no key {path!r}{hint}")
  return errors
