"""Writes an animated GIF of synthetic samples as the model sees them (decoded from their codes).

  python -m lumos_jax.data.synthetic_gif OUT.gif [--seed 0] [--count 6] [--scale 4]

One sample per row, its caption written beside it; the captions are also printed.
"""
from __future__ import annotations

import argparse
import sys

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

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
  label = np.broadcast_to(_label(caption, video.shape[1]), (len(video), video.shape[1], CAPTION_PX, 3))
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="path of the GIF to write")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--count", type=int, default=6)
  parser.add_argument("--scale", type=int, default=4, help="pixel upscaling for viewing")
  args = parser.parse_args(argv)
  cfg = dataset.SyntheticConfig()
  frames, captions = sheet(args.seed, args.count, args.scale, cfg)
  iio.imwrite(args.out, frames, extension=".gif", duration=1000 / cfg.fps, loop=0)
  print(f"wrote {args.out} ({frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames), "
        f"seed {args.seed}, top to bottom:")
  print("\n".join(f"{i}: {c}" for i, c in enumerate(captions)))


if __name__ == "__main__":
  sys.exit(main())
