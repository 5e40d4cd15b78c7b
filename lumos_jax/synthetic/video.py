"""Writes an animated GIF of synthetic samples as the model sees them (decoded from their codes).

  python -m lumos_jax.synthetic.video OUT.gif [--seed=0] [--count=6] [--scale=4] [--distractors=0]
      [--config=demo | --frame_px=24 --frames=4]

One sample per row, its caption written beside it; the captions are also printed. The videos are
the generator's (8 frames of 32 px) unless `--config` names a training config (its videos as that
run trains on them: configs/demo.py's are 4 frames of 24 px) or --frame_px / --frames set them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import imageio.v3 as iio
import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from lumos_jax import cli
from lumos_jax.synthetic import dataset
from lumos_jax.synthetic.tokenizer import PatchTokenizer

CAPTION_PX = 200  # width of the caption column


def _label(text: str, height: int) -> np.ndarray:
  """uint8 [height, CAPTION_PX, 3]: `text` in black on white."""
  label = Image.new("RGB", (CAPTION_PX, height), (255, 255, 255))
  ImageDraw.Draw(label).text((6, height // 2 - 6), text, fill=(0, 0, 0))
  return np.asarray(label)


def captioned(video: np.ndarray, caption: str, scale: int = 4) -> np.ndarray:
  """uint8 [T, H * scale, W * scale + CAPTION_PX, 3]: the video upscaled, its caption beside it."""
  video = np.asarray(video).repeat(scale, 1).repeat(scale, 2)
  label = np.broadcast_to(_label(caption, video.shape[1]),
                          (len(video), video.shape[1], CAPTION_PX, 3))
  return np.concatenate([video, label], axis=2)


def write_video(path, frames: np.ndarray, fps: int):
  """Writes uint8 [T, H, W, 3] frames as a looping GIF or an H.264 MP4, by the path's suffix.

  MP4 frames are padded (white, right and bottom) to multiples of 16 pixels, which H.264's
  yuv420p needs; the ffmpeg binary comes with the imageio-ffmpeg package.
  """
  suffix = str(path).rsplit(".", 1)[-1].lower()
  if suffix == "gif":
    iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
  elif suffix == "mp4":
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)), constant_values=255)
    iio.imwrite(path, frames, extension=".mp4", fps=fps, codec="libx264")
  else:
    raise ValueError(f"{path}: write videos as .gif or .mp4")


def write_captioned(path, video: np.ndarray, caption: str, fps: int, scale: int = 4):
  """Writes uint8 [T, H, W, 3] frames as a GIF or MP4 (by suffix) with the caption beside them."""
  write_video(path, captioned(video, caption, scale), fps)


def sheet(seed: int, count: int, scale: int,
          cfg: dataset.SyntheticConfig = dataset.SyntheticConfig()):
  """Samples 0..count-1 decoded from their codes, one per row, caption column on the right.

  Returns (uint8 [T, count * H * scale, W * scale + CAPTION_PX, 3] frames, captions).
  """
  tokenizer = PatchTokenizer(cfg)
  samples = [dataset.generate(seed, i, cfg) for i in range(count)]
  rows = [captioned(tokenizer.decode(tokenizer.encode(s.video)), s.caption, scale) for s in samples]
  return np.concatenate(rows, axis=1), [s.caption for s in samples]


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines the command's flags in `fv`: the global FLAGS when run as a script, a fresh set per
  `main` call; importing this module defines none."""
  flags.DEFINE_integer("seed", 0, "dataset seed of the samples", flag_values=fv)
  flags.DEFINE_integer("count", 6, "samples 0..count-1, one per row", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("scale", 4, "pixel upscaling for viewing", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("distractors", 0, "uncaptioned objects per video (the harder variant of "
                       "the ablations)", lower_bound=0, flag_values=fv)
  flags.DEFINE_string("config", "", "show the videos this training config (a name in configs/ "
                      "or a .py path) trains on: its geometry, motions and distractors",
                      flag_values=fv)
  flags.DEFINE_integer("frame_px", 0, "frame side in pixels (0: the generator's or --config's)",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("frames", 0, "frames per video (0: the generator's or --config's)",
                       lower_bound=0, flag_values=fv)


def video_config(f) -> dataset.SyntheticConfig:
  """The videos the flags ask for: --config's training videos or the generator's, then
  --distractors, --frame_px and --frames where non-zero. Raises ValueError (naming the setting) for
  a geometry no video fits, FileNotFoundError for a --config that is not a config file."""
  if f.config:
    from lumos_jax import config as config_lib  # only this flag needs a config file read
    cfg = dataset.config_of_run(config_lib.load(f.config))
  else:
    cfg = dataset.SyntheticConfig()
  given = {"distractors": f.distractors, "frame_px": f.frame_px, "frames": f.frames}
  return dataclasses.replace(cfg, **{k: v for k, v in given.items() if v})


def command(f, args: Sequence[str]) -> int:
  """Writes the sheet GIF for parsed flag values `f` (see `define_flags`) to the one positional
  argument in `args` (OUT.gif), prints its captions top to bottom, returns 0."""
  # Imported here: absl.app defines flags of its own (pdb, profiling) when imported, and the
  # sampler imports this module as a library.
  from absl import app
  if len(args) != 1:
    raise app.UsageError(f"give one output path, OUT.gif (got {len(args)} arguments: "
                         f"{list(args)})")
  out = args[0]
  try:
    cfg = video_config(f)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(f"--config={f.config!r} --frame_px={f.frame_px} --frames={f.frames}: "
                         f"{e}") from e
  frames, captions = sheet(f.seed, f.count, f.scale, cfg)
  iio.imwrite(out, frames, extension=".gif", duration=1000 / cfg.fps, loop=0)
  print(f"wrote {out} ({frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames), "
        f"seed {f.seed}, top to bottom:")
  print("\n".join(f"{i}: {c}" for i, c in enumerate(captions)))
  return 0


def main(argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows `python -m lumos_jax.synthetic.video`
  (OUT.gif and flags, no program name), parsed into a fresh flags.FlagValues, so it can be called
  repeatedly. Returns the exit code (0); raises flags.Error for a bad flag (unknown, ill-typed,
  --count or --scale below 1) and app.UsageError unless exactly one OUT path is given."""
  return cli.run(define_flags, command, "video", argv)


if __name__ == "__main__":  # flags only for the command line: importing this module defines none
  cli.run_script(define_flags, command)
