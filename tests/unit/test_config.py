"""Config validation names the field; mesh shapes resolve with one -1."""
import pytest

from lumos_jax import config, sharding


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
