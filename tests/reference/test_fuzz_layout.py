"""Fuzzing layout_check.validate with mutants of real sequences, judged by an independent oracle.

Sources: the official sample records read through the import (official.load_sample, videos cut to
4 latent frames to keep the test fast), the synthetic dataset (synthetic.dataset.to_tokens) and
random compact-vocabulary samples of varied frame sizes (helpers.random_sample). Each mutant is
classified by `oracle_valid`, a naive token-by-token re-statement of LUMOS_REFERENCE.md section 2.2
written here (it shares no code with tokens.parse or layout_check). Asserted: validate accepts
exactly the mutants the oracle calls valid (so 0 malformed sequences accepted), raises nothing but
ValueError, and an accepted mutant is identical to tokens.build of its own parse.
"""
import collections
import time

import numpy as np
import pytest

from helpers import random_sample
from lumos_jax import layout_check, tokens
from lumos_jax.data import official, official_index
from lumos_jax.synthetic import dataset as synthetic
from lumos_jax.synthetic.tokenizer import PatchTokenizer

VIDEO_YAML = "configs/data/pre-tokenized-vid-onejson-Cosmos-DV4x8x8.yaml"
IMAGE_YAML = "configs/data/pre-tokenized-img-onejson-Cosmos-DV4x8x8.yaml"
COMPACT = tokens.Vocab.compact()


# ---- the oracle ---------------------------------------------------------------------------------

def oracle_valid(ids, v: tokens.Vocab) -> bool:
  """[BOS text* SEP]? VIDEO_START NUM(>=0) NUM(>=1) frame+ VIDEO_END SEP, every frame
  IMAGE_START NUM(h>=1) NUM(w>=1) (w codes NEWLINE) x h IMAGE_END with the first frame's sizes."""
  ids = [int(x) for x in ids]
  special = {v.bos, v.sep, v.image_start, v.image_end, v.newline, v.mask, v.video_start,
             v.video_end}
  num = lambda x: x - v.number_zero if v.number_zero <= x < v.number_zero + v.number_count else -1
  text = lambda x: 0 <= x < v.visual_offset and x not in special and num(x) < 0
  i = 0
  if ids[:1] == [v.bos]:
    i = 1
    while i < len(ids) and text(ids[i]):
      i += 1
    if ids[i:i + 1] != [v.sep]:
      return False
    i += 1
  head = ids[i:i + 3]
  if len(head) < 3 or head[0] != v.video_start or num(head[1]) < 0 or num(head[2]) < 1:
    return False
  i, sizes = i + 3, []
  while ids[i:i + 1] == [v.image_start]:
    size = ids[i + 1:i + 3]
    if len(size) < 2 or num(size[0]) < 1 or num(size[1]) < 1 or (sizes and size != sizes[0]):
      return False
    sizes.append(size)
    h, w = num(size[0]) * v.size_unit, num(size[1]) * v.size_unit
    grid = np.asarray(ids[i + 3:i + 3 + h * (w + 1)], np.int64)
    if len(grid) != h * (w + 1):
      return False
    grid = grid.reshape(h, w + 1)
    codes = grid[:, :w]
    if ((codes < v.visual_offset) | (codes >= v.visual_offset + v.visual_size)).any():
      return False
    if (grid[:, w] != v.newline).any():
      return False
    i += 3 + h * (w + 1)
    if ids[i:i + 1] != [v.image_end]:
      return False
    i += 1
  return bool(sizes) and ids[i:] == [v.video_end, v.sep]


def rebuilt(ids, layout, v: tokens.Vocab) -> np.ndarray:
  """tokens.build of what the parse says: text, codes [T, H, W], duration, fps."""
  ids = np.asarray(ids)
  start = int(np.flatnonzero(ids == v.video_start)[0])
  text = ids[1:start - 1] if start else None
  t, h, w = int(layout.frame.max()) + 1, int(layout.row.max()) + 1, int(layout.col.max())
  codes = (ids[layout.code] - v.visual_offset).reshape(t, h, w)
  duration, fps = (int(x) - v.number_zero for x in ids[start + 1:start + 3])
  return tokens.build(text, codes, fps=fps, duration=duration, vocab=v)


# ---- mutations ----------------------------------------------------------------------------------

def _frames_of(ids, v):
  """[(start, end)) of each frame block (of a valid sequence)."""
  starts = np.flatnonzero(ids == v.image_start)
  ends = np.flatnonzero(ids == v.image_end) + 1
  return list(zip(starts.tolist(), ends.tolist()))


def _any_id(rng, v):
  """A random id, biased to the interesting ones: specials, integers, text, visual."""
  pools = [[v.bos, v.sep, v.image_start, v.image_end, v.newline, v.mask, v.video_start,
            v.video_end],
           [v.number_zero, v.number_zero + 1, v.number_zero + int(rng.integers(v.number_count))],
           [int(rng.integers(v.number_zero + v.number_count, v.visual_offset))],
           [v.visual_offset + int(rng.integers(v.visual_size))]]
  pool = pools[int(rng.integers(len(pools)))]
  return pool[int(rng.integers(len(pool)))]


def _header_at(ids, v):
  return int(np.flatnonzero(ids == v.video_start)[0])


def mutate(kind, ids, rng, v, donors):
  """One mutant of a valid sequence `ids` (int64 [L]) of vocabulary `v`."""
  frames = _frames_of(ids, v)
  n = len(ids)
  if kind == "delete":
    return np.delete(ids, int(rng.integers(n)))
  if kind == "insert":
    return np.insert(ids, int(rng.integers(n + 1)), _any_id(rng, v))
  if kind == "replace":
    out = ids.copy()
    out[int(rng.integers(n))] = _any_id(rng, v)
    return out
  if kind == "truncate":
    return ids[:int(rng.integers(n))]
  if kind == "header":
    out = ids.copy()
    out[_header_at(ids, v) + int(rng.integers(3))] = _any_id(rng, v)
    return out
  if kind == "prompt":
    out = ids.copy()
    out[int(rng.integers(max(_header_at(ids, v), 1)))] = _any_id(rng, v)
    return out
  if kind == "special_between_frames":
    bounds = [s for s, _ in frames] + [frames[-1][1]]
    return np.insert(ids, bounds[int(rng.integers(len(bounds)))], _any_id(rng, v))
  if kind == "foreign_frame":  # a frame of another sample, of another size where one exists
    s, e = frames[int(rng.integers(len(frames)))]
    size = lambda seq, at: seq[at + 1:at + 3].tolist()  # size tokens of the frame at `at`
    other = [d for d in donors if size(d, _frames_of(d, v)[0][0]) != size(ids, s)] or donors
    donor = other[int(rng.integers(len(other)))]
    ds, de = _frames_of(donor, v)[0]
    return np.concatenate([ids[:s], donor[ds:de], ids[e:]])
  if kind == "swap_frames":
    a, b = (frames[int(k)] for k in rng.integers(len(frames), size=2))
    (a, b) = sorted((a, b))
    if a == b:
      return np.concatenate([ids[:b[1]], ids[a[0]:a[1]], ids[b[1]:]])  # duplicate one
    return np.concatenate([ids[:a[0]], ids[b[0]:b[1]], ids[a[1]:b[0]], ids[a[0]:a[1]],
                           ids[b[1]:]])
  if kind == "drop_text":
    return ids[_header_at(ids, v):]
  raise ValueError(kind)


KINDS = ("delete", "insert", "replace", "truncate", "header", "prompt", "special_between_frames",
         "foreign_frame", "swap_frames", "drop_text")


# ---- sources ------------------------------------------------------------------------------------

def official_sequences(root):
  """The 12 videos (cut to 4 latent frames: 1 s at 12 fps) and 12 images, imported."""
  num2tokens = official_index.load_num2tokens(root)
  entries = [e for y in (VIDEO_YAML, IMAGE_YAML) for e in official_index.read_index(root / y, root)]
  return [official.load_sample(root, e, num2tokens=num2tokens, frames=4).tokens.astype(np.int64)
          for e in entries]


def compact_sequences(n_synthetic=16, n_random=48):
  cfg = synthetic.SyntheticConfig()
  tokenizer = PatchTokenizer(cfg)
  out = [synthetic.to_tokens(synthetic.generate(5, i, cfg), tokenizer, COMPACT)
         for i in range(n_synthetic)]
  rng = np.random.default_rng(11)
  out += [random_sample(rng, text=False if i % 5 == 0 else None) for i in range(n_random)]
  return [x.astype(np.int64) for x in out]


def fuzz(sources, v, count, seed):
  """Counter {(kind, verdict): n}; asserts validate agrees with the oracle on every mutant."""
  rng = np.random.default_rng(seed)
  counts = collections.Counter()
  for k in range(count):
    kind = KINDS[k % len(KINDS)]
    ids = sources[int(rng.integers(len(sources)))]
    mutant = mutate(kind, ids, rng, v, sources)
    expected = oracle_valid(mutant, v)
    try:
      layout = layout_check.validate(mutant, v)
    except ValueError as e:
      assert str(e).startswith("malformed sequence at token "), str(e)
      assert not expected, f"{kind}: a valid mutant was refused: {e}"
      counts[kind, "refused malformed"] += 1
      continue
    assert expected, f"{kind}: a malformed mutant was accepted: {mutant.tolist()[:80]}"
    np.testing.assert_array_equal(rebuilt(mutant, layout, v), mutant)
    counts[kind, "accepted valid"] += 1
  return counts


def _report(title, counts):
  print(f"\n{title}: {sum(counts.values())} mutants")
  for kind in KINDS:
    print(f"  {kind:24s} accepted valid {counts[kind, 'accepted valid']:4d}   "
          f"refused malformed {counts[kind, 'refused malformed']:4d}")


def test_every_source_is_valid(official_samples):
  for ids in official_sequences(official_samples):
    assert oracle_valid(ids, tokens.LUMOS)
    layout_check.validate(ids)
  for ids in compact_sequences():
    assert oracle_valid(ids, COMPACT)
    layout_check.validate(ids, COMPACT)


@pytest.mark.parametrize("source", ["official", "compact"])
def test_fuzz_no_malformed_sequence_is_accepted(source, request):
  if source == "official":
    sources, v, count = official_sequences(request.getfixturevalue("official_samples")), \
        tokens.LUMOS, 600
  else:
    sources, v, count = compact_sequences(), COMPACT, 1500
  start = time.perf_counter()
  counts = fuzz(sources, v, count, seed=1 if source == "official" else 2)
  seconds = time.perf_counter() - start
  _report(f"{source} ({seconds:.1f} s)", counts)
  assert sum(counts.values()) == count
  assert seconds < 60  # no hang
  for kind in KINDS:  # every mutation kind ran
    assert counts[kind, "accepted valid"] + counts[kind, "refused malformed"] > 0
