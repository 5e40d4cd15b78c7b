"""Multi-process start-up: jax.distributed from the config or the cluster environment, and the
preflight every process runs before training.

  setup_distributed(cfg)   jax.distributed.initialize with the `config.distributed.*` fields
  preflight(cfg, workdir)  logs this process's devices; refuses to start when the processes were
                           given different configs or workdirs (ValueError naming them); warns
                           of a known slow CPU setting (`cpu_bf16_advice`)
  StopRequest              SIGTERM / SIGINT -> a stop that every process takes at the same step

The comparison itself (`canonical`, `check_same`) is pure, so it is tested without processes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger("lumos_jax.train")

# Fields that legitimately differ between the processes of one run (launch/local.sh passes each
# process its own id); every other field, and the workdir, must be the same everywhere.
PER_PROCESS_FIELDS = ("distributed.process_id", "distributed.local_device_ids")


# With several processes the stop flag is all-gathered at log and checkpoint steps and at least
# every this many steps; a single process reads its own flag every step (no sync).
STOP_CHECK_EVERY = 10

# jaxlib 0.11.2 on CPU: with XLA's default YNNPACK setting ("individual_dot") a one-device
# program's MLP weight-gradient matmuls come out with both operands transposed (a transpose folded
# into the dot), which YNNPACK does not take, and in bfloat16 the fallback is slow; with "dot" they
# come out canonical and run in YNNPACK. The demo's bfloat16 step on one device: 754 ms by
# default, 160-188 ms with this flag; on two devices (a sharding constraint between transpose and
# dot keeps the dots canonical there) 137-151 ms by default (README "Demo run").
CPU_BF16_ONE_DEVICE_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"


class Interrupted(BaseException):
  """Raised from the signal handler while nothing needs saving: the run exits at once (a
  BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it)."""

  def __init__(self, signum: int):
    super().__init__(f"signal {signum}")
    self.signum = signum


class StopRequest:
  """SIGTERM and SIGINT as a request to stop.

  While `urgent` (set-up, the first batch, the first compilation: no step to save yet) the
  handler raises `Interrupted` where the main thread is (after the C++ call it may be in, such
  as a compilation, returns). Afterwards it only records the signal, and the loop asks `agreed`
  at steps that are the same on every process: True there when any process has been signalled,
  so all of them save the same step and exit. `install` may be called again (jax.distributed
  installs its own SIGTERM notifier); `restore` puts back the handlers found first.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal: int | None = None
    self.urgent = True
    self._previous: dict[int, object] = {}

  def install(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      return  # Python lets only the main thread handle signals (in-process callers)
    for signum in self.SIGNALS:
      self._previous.setdefault(signum, signal.signal(signum, self._handle))

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal = signum
    if self.urgent:
      raise Interrupted(signum)

  def agreed(self, check: bool) -> bool:
    """Whether to stop after this step. One process: its own flag, every step. Several: an
    all-gather of the flags when `check` (which must be the same on every process), else False.
    """
    if jax.process_count() == 1:
      return self.signal is not None
    if not check:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.signal is not None))
    return bool(np.asarray(flags).any())

  def describe(self) -> str:
    if self.signal is not None:
      return f"signal {signal.Signals(self.signal).name}"
    return "a signal to another process"


def init_kwargs(dist) -> dict:
  """The jax.distributed.initialize keyword arguments of a `config.distributed` block.

  Empty values ("" / 0 / ()) become None: jax then takes them from the cluster environment it
  detects (SLURM, Open MPI, Cloud TPU, Kubernetes) or, for the timeouts, its own defaults.
  `process_id` counts only when `num_processes` is set (0 is a valid id, so it cannot mean unset).
  """
  kwargs = dict(
      coordinator_address=dist.coordinator or None,
      num_processes=dist.num_processes or None,
      process_id=dist.process_id if dist.num_processes else None,
      local_device_ids=list(dist.get("local_device_ids") or ()) or None,
      cluster_detection_method=dist.get("cluster_detection_method") or None,
      coordinator_bind_address=dist.get("coordinator_bind_address") or None)
  for field in ("initialization_timeout", "heartbeat_timeout_seconds", "shutdown_timeout_seconds"):
    if dist.get(field):  # left out: jax's default (300 / 100 / 300 s in jax 0.11.2)
      kwargs[field] = int(dist[field])
  return kwargs


def setup_distributed(cfg) -> None:
  """jax.distributed.initialize when config field distributed.enabled is set (once per process;
  it must run before anything touches a device)."""
  dist = cfg.get("distributed")
  if dist and dist.enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize(**init_kwargs(dist))


def canonical(cfg, workdir) -> str:
  """The config and workdir as sorted JSON, without the PER_PROCESS_FIELDS: the text that must be
  identical on every process."""
  flat = _flatten(json.loads(cfg.to_json_best_effort()))
  for field in PER_PROCESS_FIELDS:
    flat.pop(field, None)
  flat["workdir"] = str(epath.Path(workdir))  # "/a/run/" and "/a/run" are one workdir
  return json.dumps(flat, sort_keys=True)


def check_same(texts: Sequence[str]) -> None:
  """Raises ValueError when the `canonical` texts of the processes (index = process) differ,
  naming the processes that differ from process 0 and the fields in which they do."""
  reference = json.loads(texts[0])
  problems = []
  for p, text in enumerate(texts[1:], start=1):
    if text == texts[0]:
      continue
    other = json.loads(text)
    fields = sorted(k for k in reference.keys() | other.keys()
                    if reference.get(k, "<absent>") != other.get(k, "<absent>"))
    shown = ", ".join(f"{k}={other.get(k, '<absent>')!r} (process 0: "
                      f"{reference.get(k, '<absent>')!r})" for k in fields[:5])
    more = f" and {len(fields) - 5} more" if len(fields) > 5 else ""
    problems.append(f"process {p}: {shown}{more}")
  if problems:
    raise ValueError(
        f"the {len(texts)} processes were not started with the same config and workdir "
        f"(every process must get the same --config file, --config.* overrides and --workdir); "
        f"differing from process 0: {'; '.join(problems)}")


def preflight(cfg, workdir) -> None:
  """Logs this process's place in the run; with several processes, checks that all of them hold
  the same config and workdir (a collective: every process must call it)."""
  local = jax.local_devices()
  log.info("process %d/%d on %s: %d local %s device(s) %s of %d global", jax.process_index(),
           jax.process_count(), socket.gethostname(), len(local), local[0].platform,
           [d.id for d in local], jax.device_count())
  advice = cpu_bf16_advice(local[0].platform, jax.device_count(), cfg.model.dtype,
                           os.environ.get("XLA_FLAGS", ""))
  if advice:
    log.warning(advice)
  if jax.process_count() == 1:
    return
  text = canonical(cfg, workdir)
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  digests = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 32]
  if (digests != digests[0]).any():  # every process sees the same digests: all take this branch
    check_same([t.decode() for t in _allgather_bytes(text.encode())])
  log.info("preflight: %d processes hold the same config and workdir", jax.process_count())


def cpu_bf16_advice(platform: str, devices: int, dtype: str, xla_flags: str) -> str | None:
  """A warning for bfloat16 training on a single CPU device under XLA's default YNNPACK setting
  (about 5x slower, see CPU_BF16_ONE_DEVICE_FLAG), or None when that is not the case or the user
  chose a YNNPACK setting already. `devices`: the run's global device count."""
  if platform != "cpu" or devices != 1 or dtype != "bfloat16" or "ynn_fusion_type" in xla_flags:
    return None
  return ("model.dtype='bfloat16' on a single CPU device runs about 5x slower with XLA's default "
          "YNNPACK setting: split the host into devices (XLA_FLAGS=--xla_force_host_platform_"
          f"device_count=<cores>, as launch/demo.sh does) or add {CPU_BF16_ONE_DEVICE_FLAG} to "
          "XLA_FLAGS (README \"Demo run\")")


def _allgather_bytes(data: bytes) -> list[bytes]:
  """`data` of every process (index = process), through two small all-gathers (the lengths, then
  the bytes padded to the longest)."""
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = np.frombuffer(data, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [bytes(row[:n]) for row, n in zip(rows, lengths)]


def _flatten(tree: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1} (the --config.a.b names)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
