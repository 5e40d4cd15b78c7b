"""Released Lumos-1 checkpoints (official / Hugging Face Chameleon format) <-> lumos_jax runs.

  python -m lumos_jax.convert import HF_DIR WORKDIR    # config.json + *.safetensors -> a run
  python -m lumos_jax.convert export WORKDIR HF_DIR    # a run's latest checkpoint -> safetensors

`names` maps tensors and layouts, `hf_config` the configs, `safetensors_io` reads and writes the
files one tensor at a time, `importer` / `exporter` are the two directions.
"""
from lumos_jax.convert.exporter import export_checkpoint
from lumos_jax.convert.importer import import_checkpoint

__all__ = ["export_checkpoint", "import_checkpoint"]
