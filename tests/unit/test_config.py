"""Config validation names the field; mesh shapes resolve with one -1."""
import pytest

from lumos_jax import config, config_checks, sharding


def _validate(**changes):
  cfg = config.load("tiny")
  for key, value in changes.items():
    section, _, field = key.rpartition(".")
    (cfg[section] if section else cfg)[field] = value
  return config.validate(cfg, 8)


def test_invalid_configs_fail_naming_the_field():
  assert _validate()[0] == (2, 2, 2)
  with pytest.raises(ValueError, match=r"mesh=\(3, 1, 1\) does not fit the 8 devices"):
    _validate(mesh=(3, 1, 1))
  with pytest.raises(ValueError, match="MM-RoPE needs head_dim"):
    _validate(**{"model.head_dim": 48})
  with pytest.raises(ValueError, match="data.batch_size=6 must be divisible"):
    _validate(**{"data.batch_size": 6})
  with pytest.raises(ValueError, match="model.vocab_size=500 is smaller"):
    _validate(**{"model.vocab_size": 500})


@pytest.mark.parametrize("shape,devices,expected", [
    ((1, -1, 1), 8, (1, 8, 1)), ((2, 2, 2), 8, (2, 2, 2)), ((-1, 2, 1), 4, (2, 2, 1))])
def test_mesh_shape_resolves(shape, devices, expected):
  assert sharding.resolve_mesh_shape(shape, devices) == expected


@pytest.mark.parametrize("shape,devices,message", [
    ((1, 1), 8, "one size per axis"), ((-1, -1, 1), 8, "at most one -1"),
    ((0, 1, 8), 8, "sizes must be positive"), ((3, -1, 1), 8, "not divisible by 3"),
    ((2, 2, 1), 8, "needs 4 devices, have 8")])
def test_bad_mesh_shapes_are_refused(shape, devices, message):
  with pytest.raises(ValueError, match=message):
    sharding.resolve_mesh_shape(shape, devices)


def _errors(**changes) -> list[str]:
  """The error lines `config.validate` raises for the tiny config with `changes` ([] if none)."""
  try:
    _validate(**changes)
  except config.ConfigError as e:
    return e.errors
  return []


@pytest.mark.parametrize("changes,line", [  # the commands users found, then one per rule
    ({"optim.lr": -3e-4}, "config field optim.lr=-0.0003: expected a number > 0"),
    ({"steps": -5}, "config field steps=-5: expected an int >= 1"),
    ({"checkpoint_every": 0}, "config field checkpoint_every=0: expected an int >= 1"),
    ({"optim.accum_steps": 0}, "config field optim.accum_steps=0: expected an int >= 1"),
    ({"optim.min_lr": -1.0}, "optim.min_lr=-1.0: expected a number >= 0"),
    ({"log_every": 0}, "log_every=0: expected an int >= 1"),
    ({"eval_every": -1}, "eval_every=-1: expected an int >= 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints=0: expected an int >= 1"),
    ({"optim.warmup_steps": -1}, "optim.warmup_steps=-1: expected an int >= 0"),
    ({"optim.b1": 1.0}, "optim.b1=1.0: expected a number in [0, 1)"),
    ({"optim.b2": -0.1}, "optim.b2=-0.1: expected a number in [0, 1)"),
    ({"optim.eps": 0.0}, "optim.eps=0.0: expected a number > 0"),
    ({"optim.weight_decay": -0.1}, "optim.weight_decay=-0.1: expected a number >= 0"),
    ({"optim.clip": -1.0}, "optim.clip=-1.0: expected a number >= 0"),
    ({"optim.schedule": "step"}, "optim.schedule='step': expected one of ('cosine', 'constant')"),
    ({"optim.lr": float("nan")}, "optim.lr=nan: expected a number > 0"),
    ({"data.seq_len": 0}, "data.seq_len=0: expected an int >= 1"),
    ({"data.batch_size": 0}, "data.batch_size=0: expected an int >= 1"),
    ({"data.max_frames": 0}, "data.max_frames=0: expected an int >= 1"),
    ({"data.cfg_drop": 1.5}, "data.cfg_drop=1.5: expected a number in [0, 1]"),
    ({"data.mask.min_ratio": -0.1}, "data.mask.min_ratio=-0.1: expected a number in [0, 1]"),
    ({"data.mask.kind": "box"}, "data.mask.kind='box': expected one of ('tube', 'random'"),
    ({"data.mask.schedule": "exp"}, "data.mask.schedule='exp': expected one of ('cosine'"),
    ({"data.kind": "csv"}, "data.kind='csv': expected one of ('records', 'synthetic', 'tfds')"),
    ({"data.workers": -1}, "data.workers=-1: expected an int >= 0"),
    ({"data.strides": (1, 4)}, "data.strides=(1, 4): expected 3 positive ints"),
    ({"data.strides": (1, 0, 4)}, "data.strides=(1, 0, 4): expected 3 positive ints"),
    ({"model.dtype": "float64"}, "model.dtype='float64': expected one of ('float32'"),
    ({"model.remat": "some"}, "model.remat='some': expected one of"),
    ({"model.attention": "flash"}, "model.attention='flash': expected one of"),
    ({"model.rope_variant": "2d"}, "model.rope_variant='2d': expected one of ('1d', '3d', 'mm')"),
    ({"model.d_model": 0}, "model.d_model=0: expected an int >= 1"),
    ({"model.init_std": 0.0}, "model.init_std=0.0: expected a number > 0"),
    ({"profile_steps": (5, 5)}, "profile_steps=(5, 5): expected () or (first, stop)"),
    ({"profile_steps": (1,)}, "profile_steps=(1,): expected"),
    ({"mesh": (2, 2)}, "mesh=(2, 2): expected 3 ints"),
    ({"vocab": "gpt"}, "vocab='gpt': expected one of ('lumos', 'compact')"),
    ({"distributed.num_processes": -1}, "distributed.num_processes=-1: expected an int >= 0"),
    ({"data.synthetic_frames": -1}, "data.synthetic_frames=-1: expected an int >= 0"),
    ({"data.synthetic_frame_px": 26}, "config fields data.synthetic_frame_px=26, "
     "data.synthetic_frames=0, data.synthetic_cells_per_patch=0, data.synthetic_sizes=(), "
     "data.synthetic_speeds=(): the synthetic generator refuses them: patch_px=4 must be a "
     "multiple of cells_per_patch=2 and divide frame_px=26"),
    ({"data.synthetic_cells_per_patch": 3}, "data.synthetic_cells_per_patch=3, "
     "data.synthetic_sizes=(), data.synthetic_speeds=(): the synthetic generator refuses them: "
     "cells_per_patch=3: expected 1 or 2"),
    ({"data.synthetic_speeds": (0,)}, "data.synthetic_speeds=(0,): expected () or a tuple of ints "
     ">= 1 (pixels per frame)"),
    ({"data.synthetic_frame_px": 16, "data.synthetic_speeds": (9,)}, "no (size, speed) in (5, 7) "
     "x (9,) fits 8 frames of 16 px"),
    ({"data.synthetic_cells_per_patch": -1}, "data.synthetic_cells_per_patch=-1: expected an "
     "int >= 0"),
    ({"data.synthetic_frame_px": 16, "data.synthetic_sizes": (9,)}, "no (size, speed) in (9,) x "
     "(1, 2, 3) fits 8 frames of 16 px"),
    ({"data.batch_size": 4, "optim.accum_steps": 3}, "data.batch_size=4 must be divisible by the "
     "data axes (data x fsdp = 4) times optim.accum_steps=3"),
])
def test_each_bad_field_is_refused_by_name(changes, line):
  errors = _errors(**changes)
  assert len(errors) == 1 and line in errors[0], errors


def test_every_error_is_reported_at_once():
  errors = _errors(**{"optim.lr": -3e-4, "steps": -5, "checkpoint_every": 0,
                      "optim.accum_steps": 0, "model.head_dim": 48})
  assert [e.split("=")[0] for e in errors[:4]] == [
      "config field steps", "config field checkpoint_every", "config field optim.lr",
      "config field optim.accum_steps"], errors
  assert len(errors) == 5 and errors[4].startswith("MM-RoPE needs head_dim"), errors
  with pytest.raises(ValueError, match="(?s)steps=-5.*optim.lr=-0.0003"):  # one ValueError
    _validate(**{"optim.lr": -3e-4, "steps": -5})


def test_wrong_types_are_refused():  # config files and config.json are not type-checked
  cfg = config.load("tiny").to_dict()
  cfg["steps"], cfg["optim"]["b1"], cfg["distributed"]["enabled"] = 2.5, "0.9", 1
  cfg["data"]["strides"] = [1, 4, 4]  # a list from JSON is fine
  assert config_checks.field_errors(cfg) == {
      "steps": "config field steps=2.5: expected an int >= 1",
      "optim.b1": "config field optim.b1='0.9': expected a number in [0, 1)",
      "distributed.enabled": "config field distributed.enabled=1: expected True or False"}


def test_missing_and_unknown_fields_are_named():
  cfg = config.load("tiny")
  del cfg["optim"]["clip"]
  cfg.model.n_expert = 4
  errors = config_checks.field_errors(cfg)
  assert errors["optim.clip"] == "config field optim.clip is missing: expected a number >= 0"
  assert errors["model.n_expert"].startswith("config field model.n_expert=4: not a model field")
  with pytest.raises(config.ConfigError, match="optim.clip is missing"):
    config.check_fields(cfg)


@pytest.mark.parametrize("name", ["tiny", "demo", "lumos_1b", "lumos_3b"])
def test_shipped_configs_pass_the_field_checks(name):
  assert config_checks.field_errors(config.load(name)) == {}


def test_optimizer_schedules_match_the_checks():
  from lumos_jax.train import optim
  assert config_checks.OPTIM_SCHEDULES == optim.SCHEDULES


def test_unknown_override_keys_suggest_the_closest():
  cfg = config.load("tiny")
  assert config_checks.unknown_key_errors(cfg, ["optim.lr", "data.mask.kind"]) == []
  [line] = config_checks.unknown_key_errors(cfg, ["optim.lrr"])
  assert line.startswith("--config.optim.lrr: the config has no key 'optim.lrr'; did you mean "
                         "optim.lr"), line
  [line] = config_checks.unknown_key_errors(cfg, ["zzz"])
  assert line == "--config.zzz: the config has no key 'zzz'"
  from lumos_jax.train import __main__ as train_main
  argv = ["prog", "--config=configs/tiny.py", "--workdir=W", "--config.model.d_modle=3"]
  assert "did you mean model.d_model" in train_main._unknown_keys(argv)[0]
