"""The released-weights path from the command line: convert a (tiny, random) official-format
checkpoint, sample from it with a Chameleon-style tokenizer.json and a prompt, export it back and
load the export in transformers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import official_format
from helpers import REPO
from lumos_jax import text_tokenizer


def _run(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, check=False, timeout=300,
                        capture_output=True, text=True)


def _tokenizer_json(path) -> str:
  """A word-level tokenizer.json (ids 1000.. ; unknown words -> 999), built offline."""
  words = text_tokenizer.prompt_text("a dog runs", width_px=32, height_px=32, frames=12,
                                     fps=12).split()
  vocab = {"[UNK]": 999, **{w: 1000 + i for i, w in enumerate(dict.fromkeys(words))}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.save(str(path))
  return str(path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp("convert_cli")
  official_format.write(root / "hf", shards=2)
  out = _run("lumos_jax.convert", "import", str(root / "hf"), str(root / "run"))
  assert out.returncode == 0, out.stderr
  return root


def test_sample_from_a_converted_checkpoint_with_a_prompt(converted):
  tok = _tokenizer_json(converted / "tokenizer.json")
  out = _run("lumos_jax.sample", f"--workdir={converted / 'run'}", "--prompt=a dog runs",
             f"--tokenizer={tok}", "--height=4", "--width=4", "--frames=2", "--steps=2",
             "--guidance=3", f"--out={converted / 'dog.npy'}")
  assert out.returncode == 0, out.stderr
  codes = np.load(converted / "dog.npy")
  assert codes.shape == (2, 4, 4) and codes.min() >= 0 and codes.max() < 64000


def test_official_vocabulary_without_tokenizer_says_which_file(converted):
  out = _run("lumos_jax.sample", f"--workdir={converted / 'run'}", "--prompt=a dog runs",
             "--height=4", "--width=4", "--steps=1", f"--out={converted / 'x.npy'}")
  assert out.returncode == 2
  line = out.stderr.strip().splitlines()[-1]
  assert "--tokenizer=" in line and "Alpha-VLLM/Lumina-mGPT-7B-768" in line, out.stderr


def test_export_loads_in_transformers(converted):
  transformers = pytest.importorskip("transformers", reason="needs the `parity` extra")
  out = _run("lumos_jax.convert", "export", str(converted / "run"), str(converted / "hf_out"),
             "--max_shard_gb=0.02")
  assert out.returncode == 0, out.stderr
  model, info = transformers.ChameleonForConditionalGeneration.from_pretrained(
      converted / "hf_out", output_loading_info=True)
  assert not info["unexpected_keys"] and not info["mismatched_keys"], info
  assert all(".vqmodel." in k or k.startswith("model.vqmodel") for k in info["missing_keys"]), info
  written = model.model.layers[1].self_attn.q_norm.bias.detach().numpy()
  assert np.array_equal(written[0], written[1])  # shared across heads, written per head


def test_import_refuses_a_bad_checkpoint_with_exit_2(tmp_path):
  arrays = official_format.tensors(official_format.TINY)
  del arrays["model.norm.weight"]
  official_format.write(tmp_path / "hf", arrays=arrays)
  out = _run("lumos_jax.convert", "import", str(tmp_path / "hf"), str(tmp_path / "run"))
  assert out.returncode == 2 and "missing tensor model.norm.weight" in out.stderr
  assert not (tmp_path / "run").exists()
