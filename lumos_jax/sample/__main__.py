"""Sampling from a trained run: `python -m lumos_jax.sample`.

  python -m lumos_jax.sample --workdir=/tmp/lumos_demo --prompt="a red circle moves left" \\
      --mode=t2v --frames=8 --steps=16 --guidance=3 --seed=0 --out=/tmp/lumos_demo/sample.gif

Writes the codes as `.npy` always and, for runs on the embedded synthetic dataset, the decoded
frames as a GIF and an MP4 with the prompt as caption (beside --out, whatever its suffix).
Requests are checked before anything compiles; `--help` lists every flag.

Python API (notebooks):
  from lumos_jax import sample
  sampler, cfg, vocab = sample.load("/tmp/lumos_demo")
  codes = sampler.generate(vocab.encode_text("a red circle moves left"),
                           sample.SampleConfig(frames=8, height=8, width=8, steps=16), seed=0)
"""
import pathlib
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from lumos_jax import cli, config as config_lib
from lumos_jax.sample import sampler as sample
from lumos_jax.sample.loader import load, synthetic_tokenizer

MODES = ("t2i", "t2v", "i2v")


def read_image_codes(path: str, cfg, height: int, width: int) -> np.ndarray:
  """Conditioning frames as codes [n, H, W]: a `.npy` of codes, or (synthetic runs) an image."""
  if path.endswith(".npy"):
    codes = np.load(path)
    codes = codes[None] if codes.ndim == 2 else codes
  elif cfg.data.kind == "synthetic":
    import imageio.v3 as iio
    pixels = np.asarray(iio.imread(path))[..., :3]
    pixels = pixels[None] if pixels.ndim == 3 else pixels
    codes = synthetic_tokenizer(cfg).encode(pixels[:1])
  else:
    raise ValueError(f"--image={path}: give the conditioning frame as a .npy of visual codes "
                     "(this run has no built-in visual tokenizer)")
  if codes.ndim != 3 or codes.shape[1:] != (height, width):
    raise ValueError(f"--image={path}: expected codes of {height}x{width} latents (or a frame "
                     f"that encodes to it), got shape {codes.shape}")
  return codes


def request(argv_flags, cfg, vocab):
  """(text ids, SampleConfig, given frames) of a command-line request; raises before compiling."""
  f = argv_flags
  if f.mode not in MODES:
    raise ValueError(f"--mode={f.mode!r}: choose one of {MODES}")
  height = f.height or (8 if cfg.data.kind == "synthetic" else 0)
  width = f.width or height
  if not height:
    raise ValueError("--height and --width (latent rows/columns) are required for this run")
  if f.mode == "i2v" and not f.image:
    raise ValueError("--mode=i2v needs --image")
  given = read_image_codes(f.image, cfg, height, width) if f.mode == "i2v" else None
  n_given = 0 if given is None else len(given)
  total = 1 if f.mode == "t2i" else (f.frames or cfg.data.max_frames)
  frames = total - n_given
  if frames < 1 or total > cfg.data.max_frames:
    raise ValueError(f"--frames={total}: this model was trained on at most "
                     f"data.max_frames={cfg.data.max_frames} frames (positions beyond are "
                     "untrained)")
  if vocab.byte_text_offset is None:
    raise ValueError("this run uses the official vocabulary: its prompts need the Chameleon BPE "
                     "tokenizer, which is not bundled; use the Python API with token ids")
  fps = cfg.data.get("fps", 4) if f.mode != "t2i" else 1
  sc = sample.SampleConfig(frames=frames, height=height, width=width, fps=fps,
                           duration=max(1, total // fps) if f.mode != "t2i" else 1, steps=f.steps,
                           cfg_scale=f.guidance, history_mask=f.history_mask,
                           temperature=f.temperature, temperature_schedule=f.temperature_schedule,
                           top_k=f.top_k, top_p=f.top_p,
                           code_limit=(synthetic_tokenizer(cfg).n_codes
                                       if cfg.data.kind == "synthetic" else 0))
  return vocab.encode_text(f.prompt), sc, given


def write_outputs(codes: np.ndarray, out: str, cfg, caption: str, fps: int):
  """OUT.npy (codes) always; for synthetic runs also OUT.gif and OUT.mp4 of the decoded frames
  with the caption (OUT is --out without its suffix). Returns the paths written."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  npy = out.with_suffix(".npy")
  np.save(npy, codes)
  paths = [npy]
  if cfg.data.kind == "synthetic":
    from lumos_jax.synthetic import video
    frames = synthetic_tokenizer(cfg).decode(codes)
    for suffix in (".gif", ".mp4"):
      video.write_captioned(out.with_suffix(suffix), frames, caption, fps=fps)
      paths.append(out.with_suffix(suffix))
  return paths


def command(f, args: Sequence[str]) -> int:
  """Samples for parsed flag values `f` (see `define_flags`) and the positional arguments `args`
  (there must be none); prints each path written; returns 0."""
  if args:
    raise app.UsageError(f"unexpected arguments {list(args)}: the sampler takes --flags only "
                         "(quote a prompt with spaces: --prompt=\"a red circle moves left\")")
  cfg = config_lib.load_run(f.workdir)
  vocab = config_lib.vocab(cfg)
  text, sc, given = request(f, cfg, vocab)  # every check before loading or compiling
  sampler, cfg, vocab = load(f.workdir)
  codes = sampler.generate(text, sc, seed=f.seed, given=given, progress=True)
  for path in write_outputs(codes, f.out, cfg, f.prompt, fps=max(sc.fps, 1)):
    print(f"wrote {path}")
  return 0


def main(argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows `python -m lumos_jax.sample` (no program
  name), parsed into a fresh flags.FlagValues, so it can be called repeatedly. Returns the exit
  code (0); raises flags.Error for a bad command line (unknown or ill-typed flag, no --workdir),
  app.UsageError for positional arguments, ValueError for a request the run cannot serve."""
  return cli.run(define_flags, command, "sample", argv)


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines the command's flags in `fv`: the global FLAGS when run as a script, a fresh set per
  `main` call; importing this module defines none."""
  flags.DEFINE_string("workdir", None, "training workdir (config.json + checkpoints/)",
                      flag_values=fv)
  flags.DEFINE_string("prompt", "", "text prompt", flag_values=fv)
  flags.DEFINE_string("mode", "t2v", "t2i | t2v | i2v", flag_values=fv)
  flags.DEFINE_string("image", "", "i2v conditioning frame: .npy codes or an image (synthetic)",
                      flag_values=fv)
  flags.DEFINE_integer("frames", 0, "total latent frames (0: the trained data.max_frames)",
                       flag_values=fv)
  flags.DEFINE_integer("height", 0, "latent rows (0: the synthetic dataset's)", flag_values=fv)
  flags.DEFINE_integer("width", 0, "latent columns (0: = height)", flag_values=fv)
  flags.DEFINE_integer("steps", 50, "masked-decoding steps per frame", flag_values=fv)
  flags.DEFINE_float("guidance", 15.0, "classifier-free guidance scale", flag_values=fv)
  flags.DEFINE_float("history_mask", 0.7, "fraction of each finished frame masked in the cache",
                     flag_values=fv)
  flags.DEFINE_float("temperature", 1.0, "Gumbel confidence noise", flag_values=fv)
  flags.DEFINE_enum("temperature_schedule", "cumulative", sample.SCHEDULES,
                    "see lumos_jax.sample", flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "top-k filtering (0: off)", flag_values=fv)
  flags.DEFINE_float("top_p", 1.0, "nucleus filtering (1: off)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_string("out", "sample.gif", "output path: codes go to OUT.npy, synthetic runs' "
                      "videos to OUT.gif and OUT.mp4", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  cli.run_script(define_flags, command)
