"""The training input pipeline on grain.

  sources (mixed by weight) -> seeded shuffle (reshuffled every epoch) -> per-record, with a
  per-index RNG: validate + parse -> cut to `max_frames` -> AR-DF mask -> CFG text drop -> layout
  -> pad to `seq_len` -> this process's shard -> batch -> (optional) worker processes

With `pack=True` the per-record map emits unpadded examples and, after the shard, grain's first-fit
packer puts several whole samples into each `seq_len` row (`pack_rows`), padding only at the row's
end; each sample keeps its own positions and attends only inside itself.

The stream before sharding is the same for any number of processes, and process p takes its
elements p, p + P, p + 2P, ... (read lazily: a process only reads its own records). So P processes'
local batches together hold exactly the records of one process's global batch, and a run gives
the same losses on 1 process or many. With packing each process packs its own elements: the
records of a step are still those of the stream (each once per epoch), but which samples share a
row, and so a step's exact loss, depends on P.

Every random choice comes from grain's per-index RNG (`random_map` with the pipeline seed), so an
element depends only on (seed, position in the stream): the iterator state is one integer per
stage, checkpoints with `get_state()`/`set_state()`, and resumes bit-exactly with or without
workers. A record that cannot be used (malformed tokens, too long) is dropped with a warning that
names the record and the reason (the first few per reason, then counts at 10x, 100x, ...); the
records around it come through unchanged. `max_consecutive_bad` refusals in a row (or a whole
epoch of them) stop the pipeline with a RuntimeError naming the reasons and their counts.

A source is any sequence (len + getitem) of records: objects or dicts with `tokens` (ids) and an
optional `id`. Batches are dicts of numpy arrays [batch, seq_len(, 3)] (batch: rows per process,
packed or not):
  inputs (masked ids), targets (true ids), weights (1 on masked code slots), positions, index,
  k_start, k_end, frame (-1 outside frames), valid (False on padding). Padding tokens are those of
  `tokens.pack`: ids, weights, positions and index 0, k_start = q, k_end = q + 1, frame -1.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import re
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
  max_consecutive_bad: int = 1_000  # stop with an error after this many refused records in a row
  pack: bool = False  # first-fit several samples into each row instead of one padded sample
  # Rows the packer fills at once (`pack_rows`): more bins leave less padding (a short image finds
  # a gap) but hold more samples in memory and mix a little more across epoch boundaries.
  pack_bins: int = 8
  # Loss weight of masked slots whose true code is `background_code` (a visual code index; -1:
  # none): in the synthetic videos ~80% of the slots are the empty patch, easy after a few steps
  # (README "Demo run" measures weights 0.4 and 0.1; the demo keeps 1).
  background_code: int = -1
  background_weight: float = 1.0


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


class TooLong(ValueError):
  """A record longer than seq_len; `length` (tokens) feeds the refusal summary."""

  def __init__(self, length: int, message: str):
    super().__init__(message)
    self.length = length


@dataclasses.dataclass(frozen=True)
class Refused:
  """Stands in the stream for a record that cannot be used (`CountRefused` drops it): kept
  rather than None so that the refusals are counted where they are dropped."""
  record_id: str
  reason: str  # the message with its numbers generalised: one key per kind of problem
  message: str
  length: int | None = None  # tokens, for records refused as too long


class MakeExample(grain.transforms.RandomMap):
  """One record -> one training example ({field: [L] or [L, 3]}, L = seq_len, or the sample's own
  length when `cfg.pack`, for `pack_rows`), or `Refused` for a bad record."""

  def __init__(self, cfg: PipelineConfig, vocab: tokens.Vocab):
    self.cfg, self.vocab = cfg, vocab

  def random_map(self, record, rng: np.random.Generator):
    record_id, raw = _record_tokens(record)
    try:
      return self._example(_as_ids(raw, self.cfg.max_record_tokens), rng)
    except TooLong as e:
      return Refused(str(record_id), f"longer than seq_len={self.cfg.seq_len}", str(e), e.length)
    except ValueError as e:
      return Refused(str(record_id), re.sub(r"\d+", "N", str(e))[:120], str(e))

  def _example(self, ids: np.ndarray, rng: np.random.Generator) -> dict:
    from lumos_jax import layout_check  # the strict official layout (prompt, header, trailer)
    cfg, vocab = self.cfg, self.vocab
    layout = layout_check.validate(ids, vocab, cfg.strides)  # ValueError: the record is skipped
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
      raise TooLong(len(layout), f"{len(layout)} tokens after cutting to max_frames="
                    f"{cfg.max_frames}, more than seq_len={cfg.seq_len}")
    if cfg.background_code >= 0:
      background = masked["targets"] == vocab.visual_offset + cfg.background_code
      masked["weights"] = np.where(background, cfg.background_weight * masked["weights"],
                                   masked["weights"]).astype(np.float32)
    length = len(layout) if cfg.pack else cfg.seq_len  # packing pads whole rows later
    layout = tokens.pad(layout, length)
    pad = length - len(masked["inputs"])
    out = {k: np.pad(masked[k], (0, pad)) for k in ("inputs", "targets", "weights")}
    out.update({f: getattr(layout, f) for f in FIELDS if f not in out})
    return out


WARN_FIRST = 5  # per-record warnings per reason; after these, a summary at 10x, 100x, ... counts


class NothingUsable(RuntimeError):
  """The pipeline refused every record of a long stretch: training cannot go on."""


class CountRefused(grain.transforms.Filter):
  """Drops `Refused` stand-ins, warns about them (rate-limited) and raises NothingUsable naming the
  reasons and their counts after `limit` refusals in a row: a pipeline that yields nothing must
  fail, not loop. It sits after the map, in the process (or worker) that runs it; the counts
  are not part of the iterator state (the parent's), so exact resume is unchanged and a resumed
  run starts counting afresh.
  """

  def __init__(self, limit: int, why: str):
    self.limit, self.why = limit, why  # why: what the limit is, for the error
    self.streak = collections.Counter()  # reason -> refusals since the last usable record
    self.longest: dict[str, int] = {}  # reason -> longest refused record in the streak
    # reason -> the streak's first such record: its own message keeps the numbers (the value to
    # raise a field to) that the reason generalises away
    self.first: dict[str, Refused] = {}
    self.total = collections.Counter()  # reason -> refusals ever (for the warning rate)

  def filter(self, element) -> bool:
    if not isinstance(element, Refused):
      self.streak.clear()
      self.longest.clear()
      self.first.clear()
      return True
    reason = element.reason
    self.first.setdefault(reason, element)
    self.streak[reason] += 1
    self.total[reason] += 1
    if element.length is not None:
      self.longest[reason] = max(self.longest.get(reason, 0), element.length)
    self._warn(element)
    if self.streak.total() >= self.limit:
      raise NothingUsable(self.summary())
    return False

  def summary(self) -> str:
    """'N of N consecutive records refused: COUNT REASON (the longest is L) (e.g. record R:
    MESSAGE); ...' (the example where the message says more than its reason)."""
    n = self.streak.total()
    parts = []
    for reason, count in self.streak.most_common():
      first = self.first[reason]
      parts.append(f"{count:,} {reason}"
                   + (f" (the longest is {self.longest[reason]:,} tokens)"
                      if reason in self.longest else "")
                   + (f" (e.g. record {first.record_id}: {first.message})"
                      if first.message != reason else ""))
    return (f"{n:,} of {n:,} consecutive records refused ({self.why}): "
            f"{'; '.join(parts)}. No usable example: check the records and the config fields "
            f"named here")

  def _warn(self, element: Refused) -> None:
    count = self.total[element.reason]
    if count <= WARN_FIRST:
      logging.warning("skipping record %s: %s", element.record_id, element.message)
    elif math.log10(count).is_integer():
      logging.warning("%d records skipped so far: %s (the first %d named above; e.g. record %s: "
                      "%s)", count, element.reason, WARN_FIRST, element.record_id,
                      element.message)


def pack_rows(ds: grain.IterDataset, cfg: PipelineConfig) -> grain.IterDataset:
  """Unpadded examples (MakeExample with `cfg.pack`) -> rows of `cfg.seq_len` tokens, FIELDS only.

  grain's `FirstFitPackIterDataset` puts each example into the first of `cfg.pack_bins` rows with
  room, back to back from the row's start (so padding is only at the end, and no sample is split:
  a record longer than seq_len was refused before). When one does not fit any row the rows go out
  in order (not shuffled: the stream is shuffled already, and rows then hold consecutive stretches
  of it) and a new set starts with it. Its state (where the current set started in the stream, the
  next row) makes resume exact. grain packs every field alike (same lengths, `positions` [L, 3]
  row-wise); `_packed_row` then turns its output into a layout.
  """
  packed = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={f: cfg.seq_len for f in FIELDS}, num_packing_bins=cfg.pack_bins,
      seed=cfg.seed, shuffle_bins=False)
  return packed.map(_packed_row)


def _packed_row(row: dict) -> dict:
  """grain's packed row -> our fields (as `tokens.pack` lays the same samples out).

  grain copies each sample's fields unchanged and adds `<field>_segment_ids` (k-th sample of the
  row: k, padding: 0) and `<field>_positions` (index within the sample). Positions and index are
  already per sample; the key ranges are sample-relative, so they move by the sample's start
  (q - position within the sample). Padding (zeros from grain) gets the `tokens.pack` padding:
  k_start = q, k_end = q + 1 (a padding query sees only itself), frame -1.
  """
  real = row["inputs_segment_ids"] > 0
  q = np.arange(len(real), dtype=np.int32)
  start = q - row["inputs_positions"]
  out = {f: row[f] for f in FIELDS}
  out["k_start"] = np.where(real, row["k_start"] + start, q).astype(np.int32)
  out["k_end"] = np.where(real, row["k_end"] + start, q + 1).astype(np.int32)
  out["frame"] = np.where(real, row["frame"], -1).astype(np.int32)
  return out


def build(sources: Sequence, cfg: PipelineConfig, vocab: tokens.Vocab, *,
          weights: Sequence[float] | None = None, process_index: int | None = None,
          process_count: int | None = None) -> grain.IterDataset:
  """The batched, checkpointable dataset for this process (iterate it with `iter(...)`).

  `sources` are mixed by `weights` (e.g. images and videos); the shuffled stream is sharded by
  process (default: jax.process_index() / jax.process_count()), so processes read disjoint records
  whose union is the whole epoch. `cfg.batch_size` is this process's batch (rows, packed with
  `cfg.pack`: each process packs its own records, see the module docstring).
  """
  if process_index is None or process_count is None:
    import jax  # only here: the data CLI and tests use the pipeline without jax
    process_index, process_count = jax.process_index(), jax.process_count()
  shuffled = [grain.MapDataset.source(s).shuffle(seed=cfg.seed) for s in sources]
  ds = shuffled[0] if len(shuffled) == 1 else grain.MapDataset.mix(shuffled, weights=weights)
  # Nothing usable in a whole epoch (of this process's share) stops the run too.
  epoch = max(1, math.ceil(len(ds) / process_count))
  limit, why = cfg.max_consecutive_bad, f"max_consecutive_bad={cfg.max_consecutive_bad:,}"
  if epoch < limit:
    limit, why = epoch, "a whole epoch of this process's records"
  ds = ds.repeat(cfg.num_epochs).random_map(MakeExample(cfg, vocab), seed=cfg.seed)
  ds = ds[process_index::process_count]
  ds = ds.to_iter_dataset().filter(CountRefused(limit, why))
  if cfg.pack:
    ds = pack_rows(ds, cfg)
  ds = ds.batch(cfg.batch_size, drop_remainder=True)
  if cfg.workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; scripts may not parse them
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
  return ds
