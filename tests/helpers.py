"""Random sequences, layouts and records for tests (compact vocabulary, small frames); the repo
root."""
import pathlib

import numpy as np

from lumos_jax import tokens

VOCAB = tokens.Vocab.compact()
REPO = pathlib.Path(__file__).resolve().parents[1]


def random_sample(rng: np.random.Generator, *, max_text=6, max_frames=3, max_hw=4, text=None):
  """Token ids of one random sample in the official layout with the compact vocabulary."""
  t = int(rng.integers(1, max_frames + 1))
  h, w = (int(x) for x in rng.integers(1, max_hw + 1, size=2))
  frames = rng.integers(0, VOCAB.visual_size, size=(t, h, w))
  text_ids = None if text is False else rng.integers(
      VOCAB.number_zero + VOCAB.number_count, VOCAB.visual_offset,
      size=int(rng.integers(1, max_text + 1)))
  return tokens.build(text_ids, frames, fps=int(rng.integers(1, 30)),
                      duration=int(rng.integers(1, 8)), vocab=VOCAB)


def random_packed_batch(rng: np.random.Generator, batch: int, length: int, **kw):
  """(ids [B, L], Layout fields stacked [B, ...]) of rows holding 1-3 samples and padding."""
  ids_rows, layouts = [], []
  for _ in range(batch):
    samples, used = [], 0
    for _ in range(int(rng.integers(1, 4))):
      s = random_sample(rng, **kw)
      if used + len(s) > length:
        break
      samples.append(s)
      used += len(s)
    if not samples:
      raise ValueError("length too small for a sample")
    layout = tokens.pack([tokens.parse(s, VOCAB) for s in samples], length)
    ids_rows.append(np.concatenate(samples + [np.zeros(length - used, np.int32)]))
    layouts.append(layout)
  stacked = {f: np.stack([getattr(x, f) for x in layouts]) for f in vars(layouts[0])}
  return np.stack(ids_rows).astype(np.int32), stacked


def random_records(n=40, seed=0):
  """n record dicts {"id", "tokens"} of random samples, the pipeline's input."""
  rng = np.random.default_rng(seed)
  return [{"id": f"r{i}", "tokens": random_sample(rng).tolist()} for i in range(n)]


def pipeline_config():
  """The pipeline settings the pipeline tests share."""
  from lumos_jax.data import pipeline
  return pipeline.PipelineConfig(seq_len=96, batch_size=4, seed=3, max_frames=2)


def take(iterator, n):
  """The next n items of an iterator, as a list."""
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  """Two lists of batches (dicts of arrays) are equal, key by key."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
