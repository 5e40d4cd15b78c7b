"""The training input pipeline on grain.

  sources (mixed by weight) -> seeded shuffle (reshuffled every epoch) -> per-record, with a
  per-index RNG: validate + parse -> cut to `max_frames` -> AR-DF mask -> CFG text drop -> layout
  -> pad to `seq_len` -> this process's shard -> batch -> (optional) worker processes

The stream before sharding is the same for any number of processes, and process p takes its
elements p, p + P, p + 2P, ... (read lazily: a process only reads its own records). So P processes'
local batches together hold exactly the records of one process's global batch, and a run gives
the same losses on 1 process or many.

Every random choice comes from grain's per-index RNG (`random_map` with the pipeline seed), so an
element depends only on (seed, position in the stream): the iterator state is one integer per
stage, checkpoints with `get_state()`/`set_state()`, and resumes bit-exactly with or without
workers. A record that cannot be used (malformed tokens, too long) is dropped with a warning that
names the record and the reason; the records around it come through unchanged.

A source is any sequence (len + getitem) of records: objects or dicts with `tokens` (ids) and an
optional `id`. Batches are dicts of numpy arrays [batch, seq_len(, 3)]:
  inputs (masked ids), targets (true ids), weights (1 on masked code slots), positions, index,
  k_start, k_end, frame (-1 outside frames), valid (False on padding).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import grain
import numpy as np
from absl import flags

from lumos_jax import attention, masking, tokens

FIELDS = (
    "inputs", "targets", "weights", "positions", "index", "k_start", "k_end", "frame", "valid")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  seq_len: int  # every example is padded to this many tokens
  batch_size: int  # per process
  seed: int = 0
  max_frames: int | None = None  # cut longer videos to this many frames
  mask: masking.MaskConfig = masking.MaskConfig()
  cfg_drop: float = 0.1  # probability of dropping the text (classifier-free guidance)
  num_epochs: int | None = None  # None: repeat forever
  workers: int = 0  # grain worker processes (0: in this process)
  max_record_tokens: int = 1_000_000  # refuse larger records before parsing them
  strides: tuple[int, int, int] = tokens.LUMOS_STRIDES
  max_lookahead: int | None = None  # refuse frames longer than the model's attention reaches


def _record_tokens(record) -> tuple[object, object]:
  """(id, tokens) of a record object or dict."""
  if isinstance(record, dict):
    return record.get("id", "?"), record.get("tokens")
  return getattr(record, "id", "?"), getattr(record, "tokens", None)


def _as_ids(raw, max_tokens: int) -> np.ndarray:
  """Token ids as int32 [L], or ValueError saying what is wrong with them."""
  if raw is None:
    raise ValueError("no 'tokens' field")
  if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
    raise ValueError(f"'tokens' must be a sequence of ints, got {type(raw).__name__}")
  if len(raw) == 0:
    raise ValueError("'tokens' is empty")
  if len(raw) > max_tokens:
    raise ValueError(f"{len(raw)} tokens, more than max_record_tokens={max_tokens}")
  ids = np.asarray(raw)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"'tokens' must be a flat list of ints, got {ids.dtype} {ids.shape}")
  if ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max:
    raise ValueError("'tokens' holds values beyond int32")
  return ids.astype(np.int32)


class MakeExample(grain.transforms.RandomMap):
  """One record -> one padded training example (or None, with a warning, for a bad record)."""

  def __init__(self, cfg: PipelineConfig, vocab: tokens.Vocab):
    self.cfg, self.vocab = cfg, vocab

  def random_map(self, record, rng: np.random.Generator):
    record_id, raw = _record_tokens(record)
    try:
      return self._example(_as_ids(raw, self.cfg.max_record_tokens), rng)
    except ValueError as e:
      logging.warning("skipping record %s: %s", record_id, e)
      return None

  def _example(self, ids: np.ndarray, rng: np.random.Generator) -> dict:
    cfg, vocab = self.cfg, self.vocab
    layout = tokens.parse(ids, vocab, cfg.strides)
    trailer = tokens.video_trailer(vocab)
    if ids[-len(trailer):].tolist() != trailer:
      raise ValueError(f"a training sample ends with VIDEO_END, SEP {trailer}; got "
                       f"{ids[-len(trailer):].tolist()} (truncated record?)")
    if not layout.content.any():
      raise ValueError("no frame: nothing for the visual loss")
    if cfg.max_frames:
      ids = tokens.cut_frames(ids, layout, cfg.max_frames, vocab)
      layout = tokens.parse(ids, vocab, cfg.strides)
    if cfg.max_lookahead is not None:
      attention.check_lookahead(layout.max_lookahead, cfg.max_lookahead)
    masked = masking.ardf_mask(ids, layout, rng, cfg.mask, vocab)
    if rng.random() < cfg.cfg_drop:
      start = len(ids) - len(tokens.video_suffix(ids, vocab))
      masked = {k: v[start:] for k, v in masked.items() if k != "ratio"}
      layout = tokens.parse(ids[start:], vocab, cfg.strides)
    if len(layout) > cfg.seq_len:
      raise ValueError(f"{len(layout)} tokens after cutting to max_frames={cfg.max_frames}, more "
                       f"than seq_len={cfg.seq_len}")
    layout = tokens.pad(layout, cfg.seq_len)
    pad = cfg.seq_len - len(masked["inputs"])
    out = {k: np.pad(masked[k], (0, pad)) for k in ("inputs", "targets", "weights")}
    out.update({f: getattr(layout, f) for f in FIELDS if f not in out})
    return out


def build(sources: Sequence, cfg: PipelineConfig, vocab: tokens.Vocab, *,
          weights: Sequence[float] | None = None, process_index: int | None = None,
          process_count: int | None = None) -> grain.IterDataset:
  """The batched, checkpointable dataset for this process (iterate it with `iter(...)`).

  `sources` are mixed by `weights` (e.g. images and videos); the shuffled stream is sharded by
  process (default: jax.process_index() / jax.process_count()), so processes read disjoint records
  whose union is the whole epoch. `cfg.batch_size` is this process's batch.
  """
  if process_index is None or process_count is None:
    import jax  # only here: the data CLI and tests use the pipeline without jax
    process_index, process_count = jax.process_index(), jax.process_count()
  shuffled = [grain.MapDataset.source(s).shuffle(seed=cfg.seed) for s in sources]
  ds = shuffled[0] if len(shuffled) == 1 else grain.MapDataset.mix(shuffled, weights=weights)
  ds = ds.repeat(cfg.num_epochs).random_map(MakeExample(cfg, vocab), seed=cfg.seed)
  ds = ds[process_index::process_count]
  ds = ds.to_iter_dataset().batch(cfg.batch_size, drop_remainder=True)
  if cfg.workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; scripts may not parse them
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
  return ds
