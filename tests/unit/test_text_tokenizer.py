"""The Chameleon tokenizer.json path of official-vocabulary prompts: the official template, and
the sampler's request refusing (one RequestError line) when no tokenizer file is given."""
from __future__ import annotations

import pytest
from absl import flags
from tokenizers import Tokenizer, models, pre_tokenizers

import official_format
from lumos_jax import config, text_tokenizer
from lumos_jax.convert import hf_config
from lumos_jax.sample import __main__ as sample_main


def _tokenizer(path) -> str:
  vocab = {"[UNK]": 7, "Generate": 100, "a": 101, "dog": 102, "32x32,": 103}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.save(str(path))
  return str(path)


def test_prompt_follows_the_official_template(tmp_path):
  text = text_tokenizer.prompt_text("a dog", width_px=448, height_px=256, frames=24, fps=12)
  assert text == ("Generate a video with a resolution of 448x256, consisting of 24 frames at 12 "
                  "frames per second, according to the following prompt:\n a dog")
  tok = text_tokenizer.ChameleonTokenizer(_tokenizer(tmp_path / "tokenizer.json"))
  assert tok.encode("Generate a dog zebra") == [100, 101, 102, 7]  # no BOS: tokens.build adds it


def test_missing_tokenizer_file_names_where_it_comes_from(tmp_path):
  with pytest.raises(FileNotFoundError, match="Alpha-VLLM/Lumina-mGPT-7B-768"):
    text_tokenizer.ChameleonTokenizer(tmp_path / "absent.json")


def _request(*argv):
  fv = flags.FlagValues()
  sample_main.define_flags(fv)
  fv(["sample", "--workdir=unused", *argv])
  cfg = hf_config.run_config(official_format.TINY, "TINY")
  return sample_main.request(fv, cfg, config.vocab(cfg))


def test_official_request_uses_the_tokenizer_and_the_official_video_header(tmp_path):
  path = _tokenizer(tmp_path / "tokenizer.json")
  text, sc, _ = _request("--prompt=a dog", f"--tokenizer={path}", "--height=4", "--width=4")
  assert (sc.frames, sc.fps, sc.duration) == (7, 12, 2)  # 7 latents = 12 fps x 2 s
  assert text[:2] == [100, 101] and text[-2:] == [101, 102]
  assert 103 in text  # "32x32,": 4 latents x 8 px
  text, sc, _ = _request("--prompt=a dog", f"--tokenizer={path}", "--height=4", "--mode=t2i")
  assert (sc.frames, sc.fps, sc.duration) == (1, 1, 1)


def test_official_request_without_tokenizer_is_refused():
  with pytest.raises(sample_main.RequestError, match="--tokenizer=PATH/tokenizer.json"):
    _request("--prompt=a dog", "--height=4")
