"""Loading config files and turning their fields into the objects the code uses."""
from __future__ import annotations

import importlib.util
import pathlib

from lumos_jax import tokens
from lumos_jax.model import ModelConfig

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load(name_or_path: str):
  """`get_config()` of a config file, by path or by name in configs/ ("tiny", "lumos_1b")."""
  path = pathlib.Path(name_or_path)
  if not path.suffix:
    path = CONFIG_DIR / f"{name_or_path}.py"
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"lumos_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def vocab(cfg) -> tokens.Vocab:
  """The vocabulary a config names: "lumos" (official) or "compact" (small models)."""
  if cfg.vocab == "lumos":
    return tokens.LUMOS
  if cfg.vocab == "compact":
    return tokens.Vocab.compact()
  raise ValueError(f"config field vocab={cfg.vocab!r}: expected 'lumos' or 'compact'")


def model_config(cfg) -> ModelConfig:
  """The decoder config, checked against the vocabulary the data uses."""
  model_cfg = ModelConfig.from_config(cfg.model)
  v = vocab(cfg)
  if model_cfg.vocab_size < v.size:
    raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the {cfg.vocab!r} "
                     f"vocabulary ({v.size} ids)")
  if model_cfg.visual_offset != v.visual_offset:
    raise ValueError(f"model.visual_offset={model_cfg.visual_offset} does not match the first "
                     f"visual id of the {cfg.vocab!r} vocabulary ({v.visual_offset})")
  return model_cfg
