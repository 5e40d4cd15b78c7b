"""train/distributed.py: the jax.distributed.initialize arguments from config.distributed, and the
preflight comparison that refuses processes started with different configs or workdirs."""
import inspect
import logging

import jax
import pytest
from helpers import REPO

from lumos_jax import config
from lumos_jax.train import distributed


def _cfg(**overrides):
  cfg = config.load("tiny")
  for key, value in overrides.items():
    section, field = key.split("__") if "__" in key else (None, key)
    (cfg[section] if section else cfg)[field] = value
  return cfg


def test_empty_fields_are_left_to_the_cluster_environment():
  kwargs = distributed.init_kwargs(_cfg().distributed)
  assert {k: v for k, v in kwargs.items() if v is not None} == {
      "initialization_timeout": 300, "heartbeat_timeout_seconds": 100,
      "shutdown_timeout_seconds": 300}
  assert set(kwargs) <= set(inspect.signature(jax.distributed.initialize).parameters)


def test_set_fields_are_passed_through():
  dist = _cfg().distributed
  dist.update(coordinator="10.0.0.1:1234", num_processes=4, process_id=0, local_device_ids=(2, 3),
              cluster_detection_method="slurm", coordinator_bind_address="[::]:1234",
              initialization_timeout=60, heartbeat_timeout_seconds=0)
  kwargs = distributed.init_kwargs(dist)
  assert kwargs["coordinator_address"] == "10.0.0.1:1234"
  assert (kwargs["num_processes"], kwargs["process_id"]) == (4, 0)  # id 0 counts once n is set
  assert kwargs["local_device_ids"] == [2, 3]
  assert kwargs["cluster_detection_method"] == "slurm"
  assert kwargs["coordinator_bind_address"] == "[::]:1234"
  assert kwargs["initialization_timeout"] == 60
  assert "heartbeat_timeout_seconds" not in kwargs  # 0: jax's default


def test_per_process_fields_and_path_spelling_do_not_count():
  a = _cfg(distributed__process_id=0, distributed__local_device_ids=(0,))
  b = _cfg(distributed__process_id=1, distributed__local_device_ids=(1,))
  texts = [distributed.canonical(a, "/runs/x"), distributed.canonical(b, "/runs/x/")]
  assert texts[0] == texts[1]
  distributed.check_same(texts)


def test_differing_processes_and_fields_are_named():
  same = distributed.canonical(_cfg(), "/runs/x")
  texts = [same, same, distributed.canonical(_cfg(seed=1), "/runs/x"),
           distributed.canonical(_cfg(optim__lr=0.5), "/runs/y")]
  with pytest.raises(ValueError) as e:
    distributed.check_same(texts)
  message = str(e.value)
  assert "not started with the same config and workdir" in message
  assert "process 2: seed=1 (process 0: 0)" in message
  assert "process 3: optim.lr=0.5 (process 0: 0.001), workdir='/runs/y'" in message
  assert "process 1:" not in message


def test_single_process_preflight_logs_its_devices(caplog):
  with caplog.at_level(logging.INFO, logger="lumos_jax.train"):
    distributed.preflight(_cfg(), "/runs/x")
  assert "process 0/1 on " in caplog.text
  assert f"{jax.local_device_count()} local cpu device(s)" in caplog.text


def test_bfloat16_on_one_cpu_device_is_warned_with_the_fix():
  advice = distributed.cpu_bf16_advice("cpu", 1, "bfloat16", "")
  assert distributed.CPU_BF16_ONE_DEVICE_FLAG in advice
  assert "xla_force_host_platform_device_count" in advice
  # not the case, or the user chose a YNNPACK setting already
  assert distributed.cpu_bf16_advice("cpu", 2, "bfloat16", "") is None
  assert distributed.cpu_bf16_advice("cpu", 1, "float32", "") is None
  assert distributed.cpu_bf16_advice("gpu", 1, "bfloat16", "") is None
  assert distributed.cpu_bf16_advice("cpu", 1, "bfloat16",
                                     "--xla_cpu_experimental_ynn_fusion_type=") is None


def test_demo_launcher_sets_the_one_device_flag():
  """launch/demo.sh gives a one-device run the flag the warning names (a shell script cannot
  import the constant, so the two spellings are checked here)."""
  script = (REPO / "launch" / "demo.sh").read_text()
  assert f'xla_flags+=" {distributed.CPU_BF16_ONE_DEVICE_FLAG}"' in script
