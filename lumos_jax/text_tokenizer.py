"""The Chameleon text tokenizer and the official Lumos-1 prompt (LUMOS_REFERENCE.md sections 2.2,
4.1, 6), for runs on the official vocabulary.

The tokenizer is not bundled: pass the Chameleon BPE `tokenizer.json` (the official code loads it
from the Hugging Face repo Alpha-VLLM/Lumina-mGPT-7B-768; download that repo's tokenizer.json).
It is read with the `tokenizers` library, offline.

  tok = ChameleonTokenizer("/path/to/tokenizer.json")
  ids = tok.prompt_ids("a dog runs", width_px=448, height_px=256, frames=24, fps=12)
  # -> the template's ids without BOS and the 8710 separator (tokens.build adds both)
"""
from __future__ import annotations

import pathlib

from tokenizers import Tokenizer

TEMPLATE = ("Generate a video with a resolution of {width}x{height}, consisting of {frames} frames "
            "at {fps} frames per second, according to the following prompt:\n {caption}")
WHERE = ("the Chameleon text tokenizer: tokenizer.json from the Hugging Face repo "
         "Alpha-VLLM/Lumina-mGPT-7B-768 (the one the official Lumos-1 code loads)")


def prompt_text(caption: str, *, width_px: int, height_px: int, frames: int, fps: int) -> str:
  """The official prompt: frames = RGB frames (fps x duration; 1 for an image), sizes in pixels."""
  return TEMPLATE.format(width=width_px, height=height_px, frames=frames, fps=fps,
                         caption=caption)


class ChameleonTokenizer:
  """A Chameleon BPE tokenizer.json; `encode` adds no special tokens (no BOS: tokens.build adds
  it, as the official item processor prepends id 0)."""

  def __init__(self, path):
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such tokenizer file (expected {WHERE})")
    try:
      self.tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type for a malformed file
      raise ValueError(f"{path} is not a tokenizers tokenizer.json ({e}); expected {WHERE}") from e
    self.path = path

  def encode(self, text: str) -> list[int]:
    return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

  def prompt_ids(self, caption: str, **geometry) -> list[int]:
    """Ids of the official prompt for `caption` (geometry: see `prompt_text`)."""
    return self.encode(prompt_text(caption, **geometry))
