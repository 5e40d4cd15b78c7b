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

from lumos_jax.data import synthetic

CAPTION_PX = 200  # width of the caption column


def sheet(seed: int, count: int, scale: int,
          cfg: synthetic.SyntheticConfig = synthetic.SyntheticConfig()):
  """Samples 0..count-1 decoded from their codes, one per row, caption column on the right.

  Returns (uint8 [T, count * H * scale, W * scale + CAPTION_PX, 3] frames, captions).
  """
  tokenizer = synthetic.PatchTokenizer(cfg)
  samples = [synthetic.generate(seed, i, cfg) for i in range(count)]
  rows = []
  for s in samples:
    video = tokenizer.decode(tokenizer.encode(s.video)).repeat(scale, 1).repeat(scale, 2)
    label = Image.new("RGB", (CAPTION_PX, video.shape[1]), (255, 255, 255))
    ImageDraw.Draw(label).text((6, video.shape[1] // 2 - 6), s.caption, fill=(0, 0, 0))
    label = np.broadcast_to(np.asarray(label), (len(video), *np.asarray(label).shape))
    rows.append(np.concatenate([video, label], axis=2))
  return np.concatenate(rows, axis=1), [s.caption for s in samples]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="path of the GIF to write")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--count", type=int, default=6)
  parser.add_argument("--scale", type=int, default=4, help="pixel upscaling for viewing")
  args = parser.parse_args(argv)
  cfg = synthetic.SyntheticConfig()
  frames, captions = sheet(args.seed, args.count, args.scale, cfg)
  iio.imwrite(args.out, frames, extension=".gif", duration=1000 / cfg.fps, loop=0)
  print(f"wrote {args.out} ({frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames), "
        f"seed {args.seed}, top to bottom:")
  print("\n".join(f"{i}: {c}" for i, c in enumerate(captions)))


if __name__ == "__main__":
  sys.exit(main())
