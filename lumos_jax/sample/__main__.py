"""Sampling from a trained run: `python -m lumos_jax.sample`.

  python -m lumos_jax.sample --workdir=/tmp/lumos_demo --prompt="a red circle moves left" \\
      --mode=t2v --steps=16 --guidance=1.5 --top_k=1 --code_bias=0:0.6 --seed=0 \\
      --out=/tmp/lumos_demo/sample.gif
  python -m lumos_jax.sample --workdir=/tmp/lumos_1b --tokenizer=/ckpt/tokenizer.json \\
      --prompt="a dog runs on the beach" --height=32 --width=56 --out=/tmp/dog.npy
  (official-vocabulary runs, e.g. converted with `python -m lumos_jax.convert import`: the
  Chameleon tokenizer.json is not bundled, see lumos_jax.text_tokenizer)

Writes the codes as `.npy` always and, for runs on the embedded synthetic dataset, the decoded
frames as a GIF and an MP4 with the prompt as caption (beside --out, whatever its suffix).
Requests are checked before anything compiles; `--help` lists every flag.

Python API (notebooks):
  from lumos_jax import sample
  sampler, cfg, vocab = sample.load("/tmp/lumos_demo")
  codes = sampler.generate(vocab.encode_text("a red circle moves left"),
                           sample.SampleConfig(frames=4, height=6, width=6, steps=16), seed=0)
"""
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from lumos_jax import cli, config as config_lib, text_tokenizer
from lumos_jax.sample import sampler as sample
from lumos_jax.sample.loader import load, synthetic_tokenizer

MODES = ("t2i", "t2v", "i2v")


class RequestError(ValueError):
  """A sampling request the run cannot serve (bad flag value, bad conditioning frames): raised
  before anything loads or compiles; the command prints it as one line and exits with code 2."""


def code_count(cfg, vocab) -> int:
  """How many visual codes the run's tokenizer has: the synthetic patch tokenizer's for synthetic
  runs, otherwise the vocabulary's visual size."""
  if cfg.data.kind == "synthetic":
    return synthetic_tokenizer(cfg).n_codes
  return vocab.visual_size


def read_image_codes(path: str, cfg, height: int, width: int, n_codes: int) -> np.ndarray:
  """Conditioning frames as int codes [n, H, W] in [0, n_codes): a `.npy` of integer codes, or
  (synthetic runs) an image; raises RequestError for a missing file or any other shape, dtype or
  range."""
  if not pathlib.Path(path).is_file():
    raise RequestError(f"--image={path}: no such file")
  if path.endswith(".npy"):
    try:
      codes = np.load(path)
    except (ValueError, OSError) as e:  # not a .npy, or an object array (pickles are refused)
      raise RequestError(f"--image={path}: not a .npy of codes ({e})") from e
    codes = codes[None] if codes.ndim == 2 else codes
  elif cfg.data.kind == "synthetic":
    import imageio.v3 as iio
    pixels = np.asarray(iio.imread(path))[..., :3]
    pixels = pixels[None] if pixels.ndim == 3 else pixels
    codes = synthetic_tokenizer(cfg).encode(pixels[:1])
  else:
    raise RequestError(f"--image={path}: give the conditioning frame as a .npy of visual codes "
                       "(this run has no built-in visual tokenizer)")
  if codes.ndim != 3 or codes.shape[1:] != (height, width):
    raise RequestError(f"--image={path}: expected codes of {height}x{width} latents (or a frame "
                       f"that encodes to it), got shape {codes.shape}")
  if not np.issubdtype(codes.dtype, np.integer):
    raise RequestError(f"--image={path}: codes must be integers, got dtype {codes.dtype}")
  if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
    raise RequestError(f"--image={path}: codes must lie in [0, {n_codes}) (this run's tokenizer "
                       f"has {n_codes} codes), got values in [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)


def check_flags(f) -> None:
  """Raises RequestError for a flag value outside its range (before anything loads)."""
  checks = (
      (f.mode in MODES, f"--mode={f.mode!r}: choose one of {MODES}"),
      (f.steps >= 1, f"--steps={f.steps}: expected at least 1 decoding step per frame"),
      (0.0 <= f.history_mask <= 1.0, f"--history_mask={f.history_mask}: expected a fraction "
       "in [0, 1]"),
      (0.0 < f.top_p <= 1.0, f"--top_p={f.top_p}: expected a probability in (0, 1] (1: off)"),
      (f.top_k >= 0, f"--top_k={f.top_k}: expected an int >= 0 (0: off)"),
      (f.temperature >= 0.0, f"--temperature={f.temperature}: expected a number >= 0"),
      (f.frames >= 0, f"--frames={f.frames}: expected >= 0 (0: the trained data.max_frames)"),
      (f.height >= 0 and f.width >= 0, f"--height={f.height} --width={f.width}: expected latent "
       "sizes >= 1 (0: the synthetic dataset's)"))
  for ok, message in checks:
    if not ok:
      raise RequestError(message)


def frame_counts(f, cfg, n_given: int) -> tuple[int, int]:
  """(total frames, new frames) of a request with `n_given` conditioning frames."""
  max_frames = cfg.data.max_frames
  total = 1 if f.mode == "t2i" else (f.frames or max_frames)
  if total > max_frames:
    raise RequestError(f"--frames={total}: this model was trained on at most "
                       f"data.max_frames={max_frames} frames (positions beyond are untrained)")
  if n_given >= total:
    raise RequestError(
        f"--image={f.image} gives {n_given} frame(s) and the video has {total} in all, so none "
        f"is left to generate; this model was trained on at most data.max_frames={max_frames} "
        f"frames: give at most {max_frames - 1} frame(s) and --frames above their count")
  return total, total - n_given


def request(argv_flags, cfg, vocab):
  """(text ids, SampleConfig, given frames) of a command-line request; raises RequestError before
  anything loads or compiles."""
  f = argv_flags
  check_flags(f)
  # Synthetic runs default to the grid they were trained on (the demo's 24 px frames: 6 x 6).
  trained = synthetic_tokenizer(cfg).cfg.grid if cfg.data.kind == "synthetic" else 0
  height = f.height or trained
  width = f.width or height
  if not height:
    raise RequestError("--height and --width (latent rows/columns) are required for this run")
  if f.mode == "i2v" and not f.image:
    raise RequestError("--mode=i2v needs --image")
  n_codes = code_count(cfg, vocab)
  given = read_image_codes(f.image, cfg, height, width, n_codes) if f.mode == "i2v" else None
  total, frames = frame_counts(f, cfg, 0 if given is None else len(given))
  fps = cfg.data.get("fps", 4) if f.mode != "t2i" else 1
  duration = max(1, total // fps) if f.mode != "t2i" else 1
  if vocab.byte_text_offset is None and f.mode != "t2i":  # official: RGB seconds of the latents
    duration = max(1, round((total - 1) * cfg.data.strides[0] / fps))
  try:
    sc = sample.SampleConfig(frames=frames, height=height, width=width, fps=fps,
                             duration=duration, steps=f.steps,
                             cfg_scale=f.guidance, history_mask=f.history_mask,
                             temperature=f.temperature,
                             temperature_schedule=f.temperature_schedule, top_k=f.top_k,
                             top_p=f.top_p, code_bias=sample.parse_code_bias(f.code_bias),
                             code_limit=n_codes if cfg.data.kind == "synthetic" else 0)
  except ValueError as e:
    raise RequestError(str(e)) from e
  return prompt_ids(f, cfg, vocab, sc), sc, given


def prompt_ids(f, cfg, vocab, sc) -> list[int]:
  """The prompt's text ids: UTF-8 bytes for compact vocabularies; for the official vocabulary the
  official template through --tokenizer (RequestError without a readable one)."""
  if vocab.byte_text_offset is not None:
    return vocab.encode_text(f.prompt)
  if not f.tokenizer:
    raise RequestError(f"this run uses the official vocabulary: pass --tokenizer=PATH/"
                       f"tokenizer.json, {text_tokenizer.WHERE}")
  try:
    tok = text_tokenizer.ChameleonTokenizer(f.tokenizer)
  except (FileNotFoundError, ValueError) as e:
    raise RequestError(f"--tokenizer={f.tokenizer}: {e}") from e
  strides = cfg.data.strides
  return tok.prompt_ids(f.prompt, width_px=sc.width * strides[2], height_px=sc.height * strides[1],
                        frames=sc.fps * sc.duration, fps=sc.fps)  # t2i: "1 frames at 1 ..."


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
  try:
    cfg = config_lib.load_run(f.workdir)
  except (FileNotFoundError, ValueError) as e:  # not a training workdir, or a broken config.json
    raise RequestError(f"--workdir={f.workdir}: {e}") from e
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
  app.UsageError for positional arguments, RequestError (a ValueError) for a request the run
  cannot serve."""
  return cli.run(define_flags, command, "sample", argv)


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines the command's flags in `fv`: the global FLAGS when run as a script, a fresh set per
  `main` call; importing this module defines none."""
  flags.DEFINE_string("workdir", None, "training workdir (config.json + checkpoints/)",
                      flag_values=fv)
  flags.DEFINE_string("prompt", "", "text prompt", flag_values=fv)
  flags.DEFINE_string("mode", "t2v", "t2i | t2v | i2v", flag_values=fv)
  flags.DEFINE_string("tokenizer", "", "official-vocabulary runs: the Chameleon tokenizer.json",
                      flag_values=fv)
  flags.DEFINE_string("image", "", "i2v conditioning frame: .npy codes or an image (synthetic)",
                      flag_values=fv)
  flags.DEFINE_integer("frames", 0, "total latent frames (0: the trained data.max_frames)",
                       flag_values=fv)
  flags.DEFINE_integer("height", 0, "latent rows (0: the grid a synthetic run trained on)",
                       flag_values=fv)
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
  flags.DEFINE_list("code_bias", [], "CODE:BIAS,...: logits added to visual codes after guidance "
                    "(e.g. 0:-1: the synthetic empty patch e times less likely)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_string("out", "sample.gif", "output path: codes go to OUT.npy, synthetic runs' "
                      "videos to OUT.gif and OUT.mp4", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def script_command(f, args: Sequence[str]) -> int:
  """`command` for the command line: a refused request prints `error: MESSAGE` (one line, no
  traceback) to stderr and returns exit code 2."""
  try:
    return command(f, args)
  except RequestError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  cli.run_script(define_flags, script_command)
