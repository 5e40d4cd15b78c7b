"""The generation command line on a (briefly) trained tiny run: outputs and request checks."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import imageio.v3 as iio
import jax
from absl import app, flags
import numpy as np
import pytest

from helpers import REPO
from lumos_jax import checkpoint, config as config_lib, model as model_lib, sample
from lumos_jax.sample import __main__ as sample_cli
from lumos_jax.synthetic import evaluate


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run[0]


def _flags(**kw):
  base = dict(mode="t2v", prompt="a red circle moves left", image="", frames=0, height=0, width=0,
              steps=3, guidance=3.0, history_mask=0.7, temperature=1.0,
              temperature_schedule="cumulative", top_k=0, top_p=1.0, code_bias=[])
  return types.SimpleNamespace(**{**base, **kw})


def test_sample_command_writes_codes_gif_and_mp4(workdir, tmp_path):
  out = tmp_path / "video.gif"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-m", "lumos_jax.sample", f"--workdir={workdir}",
                        "--prompt=a red circle moves left", "--steps=3", "--guidance=3",
                        f"--out={out}"], env=env, cwd=REPO, check=True, timeout=600,
                       capture_output=True, text=True)
  assert "frame 2/2" in run.stdout  # tiny trains on 2 frames: progress per frame
  codes = np.load(tmp_path / "video.npy")
  assert codes.shape == (2, 8, 8) and codes.min() >= 0 and codes.max() < 512
  frames = iio.imread(out)
  assert frames.shape[0] == 2 and frames.shape[1] == 32 * 4  # 8 latents x 4 px, shown 4x
  mp4 = iio.imread(tmp_path / "video.mp4")  # padded to multiples of 16 px for H.264
  assert mp4.shape[:3] == (2, 128, 336) and frames.shape[2] == 328
  video = frames[..., :3].astype(int)[:, :, :128]
  assert np.abs(mp4[:, :, :128].astype(int) - video).mean() < 12  # lossy, but the same picture
  i2v = subprocess.run([sys.executable, "-m", "lumos_jax.sample", f"--workdir={workdir}",
                        "--mode=i2v", f"--image={tmp_path / 'video.npy'}", "--steps=2",
                        f"--out={tmp_path / 'i2v.npy'}"], env=env, cwd=REPO, check=False,
                       timeout=600, capture_output=True, text=True)
  assert i2v.returncode == 2 and "Traceback" not in i2v.stderr  # 2 given = no room
  assert "gives 2 frame(s)" in i2v.stderr and "data.max_frames=2" in i2v.stderr


def test_requests_are_checked_before_compiling(workdir, tmp_path):
  cfg = config_lib.load_run(workdir)
  from lumos_jax import config
  vocab = config.vocab(cfg)
  text, sc, given = sample_cli.request(_flags(), cfg, vocab)
  assert sc.frames == cfg.data.max_frames and given is None and sc.height == 8
  small = cfg.copy_and_resolve_references()  # the demo's 24 px frames: a 6 x 6 latent grid
  small.data.synthetic_frame_px = 24
  small_sc = sample_cli.request(_flags(), small, vocab)[1]
  assert (small_sc.height, small_sc.width) == (6, 6)
  assert sample_cli.request(_flags(height=5), small, vocab)[1].width == 5
  assert sample_cli.request(_flags(mode="t2i"), cfg, vocab)[1].frames == 1
  with pytest.raises(ValueError, match="--mode='v2v'"):
    sample_cli.request(_flags(mode="v2v"), cfg, vocab)
  with pytest.raises(ValueError, match="data.max_frames=2"):
    sample_cli.request(_flags(frames=5), cfg, vocab)
  with pytest.raises(ValueError, match="--mode=i2v needs --image"):
    sample_cli.request(_flags(mode="i2v"), cfg, vocab)
  bad = tmp_path / "bad.npy"
  np.save(bad, np.zeros((4, 4), np.int32))
  with pytest.raises(ValueError, match="expected codes of 8x8"):
    sample_cli.request(_flags(mode="i2v", image=str(bad)), cfg, vocab)
  good = tmp_path / "good.npy"
  np.save(good, np.zeros((8, 8), np.int32))
  _, sc, given = sample_cli.request(_flags(mode="i2v", image=str(good)), cfg, vocab)
  assert given.shape == (1, 8, 8) and sc.frames == 1
  n_codes = sample_cli.synthetic_tokenizer(cfg).n_codes  # < vocab.visual_size (512)
  for name, codes, message in [
      ("big", np.full((8, 8), n_codes), rf"must lie in \[0, {n_codes}\)"),
      ("negative", np.full((8, 8), -1), rf"must lie in \[0, {n_codes}\)"),
      ("float", np.zeros((8, 8), np.float32), "codes must be integers, got dtype float32"),
      ("two", np.zeros((2, 8, 8), np.int32), r"gives 2 frame\(s\) .* data.max_frames=2")]:
    np.save(tmp_path / f"{name}.npy", codes)
    with pytest.raises(sample_cli.RequestError, match=message):
      sample_cli.request(_flags(mode="i2v", image=str(tmp_path / f"{name}.npy")), cfg, vocab)
  with pytest.raises(sample_cli.RequestError, match="no such file"):
    sample_cli.request(_flags(mode="i2v", image=str(tmp_path / "absent.npy")), cfg, vocab)
  for flag, message in [
      (dict(history_mask=2.0), r"--history_mask=2.0: expected a fraction in \[0, 1\]"),
      (dict(history_mask=-0.1), "--history_mask=-0.1"), (dict(steps=0), "--steps=0"),
      (dict(top_p=0.0), r"--top_p=0.0: expected a probability in \(0, 1\]"),
      (dict(top_p=1.5), "--top_p=1.5"), (dict(top_k=-1), "--top_k=-1"),
      (dict(temperature=-1.0), "--temperature=-1.0"), (dict(frames=-1), "--frames=-1"),
      (dict(code_bias=["x"]), "--code_bias item 'x': expected CODE:BIAS"),
      (dict(code_bias=[f"{n_codes}:-1"]), rf"code_bias=\(\({n_codes}, -1.0\),\): codes must be "
       rf"distinct visual code indices >= 0 and < code_limit={n_codes}")]:
    with pytest.raises(sample_cli.RequestError, match=message):
      sample_cli.request(_flags(**flag), cfg, vocab)


def test_checkpoint_that_does_not_match_the_config(workdir, tmp_path):
  other = tmp_path / "other"
  shutil.copytree(workdir, other)
  text = (other / "config.json").read_text().replace('"mlp_dim": 128', '"mlp_dim": 192')
  (other / "config.json").write_text(text)
  with pytest.raises(ValueError, match="does not match the model"):
    sample.load(other)


def test_sampling_reads_only_the_parameters(workdir, tmp_path):
  """A checkpoint copy without the optimizer state and data position still loads for sampling,
  to the same (trained, not initial) parameters as the whole checkpoint, and samples the same."""
  copy = tmp_path / "params_only"
  shutil.copytree(workdir, copy)
  for step_dir in checkpoint.directory(copy).iterdir():
    if step_dir.name.isdigit():
      shutil.rmtree(step_dir / checkpoint.TRAIN_STATE)
      shutil.rmtree(step_dir / checkpoint.DATA)
  # checkpoint.directory is an etils path (object stores); a local one walks with pathlib's rglob.
  assert list(pathlib.Path(checkpoint.directory(workdir)).rglob(checkpoint.TRAIN_STATE))
  assert not list(pathlib.Path(checkpoint.directory(copy)).rglob(checkpoint.TRAIN_STATE))
  sampler, cfg, vocab = sample.load(copy)
  whole, _, _ = sample.load(workdir)
  _, initial = model_lib.init_model(config_lib.model_config(cfg), cfg.seed)
  for got, want, init in zip(*map(jax.tree.leaves, (sampler.params, whole.params, initial))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(got), np.asarray(init))
  request = (vocab.encode_text("a red circle moves left"),
             sample.SampleConfig(frames=2, height=8, width=8, steps=2))
  np.testing.assert_array_equal(sampler.generate(*request, seed=3),
                                whole.generate(*request, seed=3))


def test_evaluate_command(workdir, tmp_path, capsys):
  out = tmp_path / "eval"
  assert evaluate.main([f"--workdir={workdir}", "--n=3", "--steps=2", f"--out={out}",
                        "--code_bias=0:-1", "--json"]) == 0
  scores = json.loads(capsys.readouterr().out)
  for key in ("shape_acc", "color_acc", "direction_acc"):
    assert 0 <= scores[key] <= 1 and key in scores["chance"] and key in scores["shuffled"]
    assert scores["dataset"][key] == 1.0  # the scorer on the eval videos themselves
  assert scores["chance"] == {"shape_acc": 0.25, "color_acc": 0.125, "direction_acc": 0.25}
  assert scores["settings"]["n"] == 3 and scores["settings"]["frames"] == 2
  assert scores["settings"]["guidance"] == 3.0 and scores["settings"]["history_mask"] == 0.7
  assert scores["settings"]["code_bias"] == [[0, -1.0]]
  saved = json.loads((out / "scores.json").read_text())
  assert len(saved["per_video"]) == 3 and saved["shape_acc"] == scores["shape_acc"]
  sheet = iio.imread(out / "contact_sheet.png")
  assert sheet.shape[0] == 3 * (32 * 3 + 2)  # one row per video
  assert iio.imread(out / "samples.gif").shape[0] == iio.imread(out / "samples.mp4").shape[0] == 2
  assert np.load(out / "videos" / "002.npy").shape == (2, 8, 8)
  with pytest.raises(ValueError, match="synthetic_eval_count=8"):
    evaluate.main([f"--workdir={workdir}", "--n=9"])
  with pytest.raises(ValueError, match="at least 2"):
    evaluate.main([f"--workdir={workdir}", "--n=1"])
  with pytest.raises(flags.UnrecognizedFlagError, match="'cfg'"):  # renamed --guidance
    evaluate.main([f"--workdir={workdir}", "--cfg=3"])
  with pytest.raises(app.UsageError, match="unexpected arguments"):
    evaluate.main([f"--workdir={workdir}", "stray"])
  with pytest.raises(flags.IllegalFlagValueError, match="history_mask"):
    evaluate.main([f"--workdir={workdir}", "--history_mask=2"])
  with pytest.raises(ValueError, match="--code_bias item '0': expected CODE:BIAS"):
    evaluate.main([f"--workdir={workdir}", "--code_bias=0"])
  assert evaluate._json_safe({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}
