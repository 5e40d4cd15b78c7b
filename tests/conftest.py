"""Test setup: 8 forced CPU devices before anything imports jax, and the official-sample fixture."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
