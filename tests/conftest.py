"""Test setup before anything imports jax: 8 forced CPU devices and one persistent JAX compilation
cache for the session; and the official-sample fixture.

The cache (a new temporary directory per session, unless JAX_COMPILATION_CACHE_DIR is already set)
serves this process, pytest-xdist's test processes and every process the tests start, all of
which inherit the environment (the controller sets it before starting its workers): many tests
compile the same tiny config's functions. With it remat="auto"'s test (seven compilations of two
steps) took 40 s instead of 84 s, and a 40-step tiny training subprocess 24 s instead of 51 s, with
the same losses bit for bit (CPU executables are deterministic; the cache key holds the XLA flags
and devices). A process killed mid-write leaves a truncated entry that the next reader warns
about and recompiles past.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="lumos_jax_tests_compilation_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # sub-second ones too

import pathlib

import absl.flags
import pytest

absl.flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags

REPO = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL_SAMPLES = REPO.parent / "shared" / "data" / "lumos_official_samples"


@pytest.fixture(scope="session")
def official_samples() -> pathlib.Path:
  """Path of the official Lumos sample records (`../shared/...`); skips when it is absent."""
  if not (OFFICIAL_SAMPLES / "pre_tokenize").is_dir():
    pytest.skip(f"official Lumos samples not found at {OFFICIAL_SAMPLES} (needs ../shared beside "
                "the repo)")
  return OFFICIAL_SAMPLES
