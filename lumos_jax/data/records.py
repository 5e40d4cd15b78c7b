"""Token records on disk: ArrayRecord shards of msgpack-encoded samples, and a grain source.

A record directory holds

  records-00000-of-0000N.array_record ...   the samples, `shard_size` per file
  metadata.json                             count, per-shard counts, vocabulary, creation args

One record is `msgpack.packb` of a dict:

  tokens    bytes   int32 little-endian token ids [L] (one sample in the official layout)
  id        str | int
  caption   str     "" when unknown (official records hold BPE ids we cannot decode)
  fps       int     frames per second written in the video header
  duration  int     seconds written in the video header
  frames    int     latent frame count
  latent_h  int     latent rows of a frame (0 without frames)
  latent_w  int     latent columns of a frame (0 without frames)
  source    str     where the sample came from (e.g. the official .pkl path)

Why `array_record` directly and not a TFDS builder: the samples are already token ids, so TFDS's
feature encoding (tf.train.Example protos, feature specs) adds a layer and a dependency for
nothing; grain already depends on array_record, so this costs no new package; and ArrayRecord
gives random access by index, which is exactly what `grain.MapDataset.source` needs for seeded
global shuffling and exact checkpoint/resume. Shards are written with `group_size:1` so reading
one record decompresses only that record (a 7-frame 384p sample is ~29k tokens, a stored official
video ~90k).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from typing import Any, SupportsIndex
from collections.abc import Iterable

import msgpack
import numpy as np
from array_record.python import array_record_module

from lumos_jax import tokens as tokens_lib

FORMAT = "lumos_jax.records/1"
METADATA = "metadata.json"
SHARD_PREFIX = "records-"
SHARD_SUFFIX = ".array_record"
DEFAULT_SHARD_SIZE = 1024
# One record per chunk: random access reads and decompresses just that record.
WRITER_OPTIONS = "group_size:1"
# No read-ahead: grain reads records in shuffled order, so prefetching neighbours is wasted work.
READER_OPTIONS = "readahead_buffer_size:0"

_INT_FIELDS = ("fps", "duration", "frames", "latent_h", "latent_w")


@dataclasses.dataclass(eq=False)
class Record:
  """One sample: token ids int32 [L] plus what is known about it (see the module docstring)."""
  tokens: np.ndarray
  id: str | int
  caption: str = ""
  fps: int = 0
  duration: int = 0
  frames: int = 0
  latent_h: int = 0
  latent_w: int = 0
  source: str = ""

  def __post_init__(self):
    self.tokens = _as_int32(self.tokens)
    if isinstance(self.id, bool) or not isinstance(self.id, (str, int)):
      raise ValueError(f"record id must be a str or int, got {type(self.id).__name__}")
    for name in ("caption", "source"):
      if not isinstance(getattr(self, name), str):
        raise ValueError(f"record {name} must be a str, got {type(getattr(self, name)).__name__}")
    for name in _INT_FIELDS:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"record {name} must be a non-negative int, got {value!r}")
      setattr(self, name, int(value))

  def __eq__(self, other) -> bool:
    if not isinstance(other, Record):
      return NotImplemented
    return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) if f.name == "tokens"
               else getattr(self, f.name) == getattr(other, f.name)
               for f in dataclasses.fields(self))


def _as_int32(ids) -> np.ndarray:
  """Token ids as a 1-D int32 array, refusing non-integers and values beyond int32."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
    raise ValueError(f"record tokens must be a 1-D integer array, got {ids.dtype} {ids.shape}")
  if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
    raise ValueError("record tokens hold values beyond int32")
  return ids.astype(np.int32)


def encode(record: Record) -> bytes:
  """The msgpack bytes of one record (tokens as int32 little-endian bytes)."""
  fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(Record)}
  fields["tokens"] = record.tokens.astype("<i4").tobytes()
  return msgpack.packb(fields, use_bin_type=True)


def decode(data: bytes, where: str = "record") -> Record:
  """Inverse of `encode`. Raises ValueError starting with `where` for corrupt or foreign bytes."""
  try:
    fields = msgpack.unpackb(data, raw=False)
  except Exception as e:  # msgpack raises several unrelated types for bad input
    raise ValueError(f"{where}: not a msgpack record ({type(e).__name__}: {e})") from None
  if not isinstance(fields, dict):
    raise ValueError(f"{where}: expected a msgpack map, got {type(fields).__name__}")
  missing = [f.name for f in dataclasses.fields(Record) if f.name not in fields]
  if missing:
    raise ValueError(f"{where}: not a lumos_jax record: missing field(s) {', '.join(missing)}")
  raw = fields["tokens"]
  if not isinstance(raw, bytes) or len(raw) % 4:
    raise ValueError(f"{where}: 'tokens' must be int32 bytes, got {type(raw).__name__} "
                     f"of length {len(raw) if isinstance(raw, bytes) else '?'}")
  known = {f.name: fields[f.name] for f in dataclasses.fields(Record)}
  known["tokens"] = np.frombuffer(raw, "<i4").astype(np.int32)
  try:
    return Record(**known)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


def shard_name(i: int, n: int) -> str:
  return f"{SHARD_PREFIX}{i:05d}-of-{n:05d}{SHARD_SUFFIX}"


def vocab_name(vocab: tokens_lib.Vocab) -> str:
  """The name configs use for `vocab` ("lumos", "compact"), or "custom"."""
  return {tokens_lib.LUMOS: "lumos", tokens_lib.Vocab.compact(): "compact"}.get(vocab, "custom")


def write_records(out_dir: str | os.PathLike, records: Iterable[Record], *,
                  shard_size: int = DEFAULT_SHARD_SIZE, vocab: tokens_lib.Vocab = tokens_lib.LUMOS,
                  args: dict[str, Any] | None = None) -> int:
  """Writes `records` (any iterable, consumed once) as ArrayRecord shards plus metadata.json.

  Args:
    out_dir: created if needed; must not already hold records.
    shard_size: records per shard file.
    vocab: the vocabulary the token ids belong to (its name and fields go into metadata.json so
      readers can rebuild it with `RecordSource.vocab`).
    args: how the records were made (command, options), stored as `args` in metadata.json.
  Returns:
    the number of records written. If the iterable raises, the partial shards are removed and
    the exception propagates (no half-written directory is left behind).
  """
  if shard_size < 1:
    raise ValueError(f"shard_size must be at least 1, got {shard_size}")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if (out / METADATA).exists() or any(out.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
    raise FileExistsError(f"{out} already holds records; write to an empty directory")
  # The total is unknown until the iterable ends, so shards get their "-of-N" names at the end.
  partial: list[tuple[pathlib.Path, int]] = []
  writer = None
  try:
    for record in records:
      if writer is None or partial[-1][1] == shard_size:
        if writer is not None:
          writer.close()
        path = out / f".partial-{len(partial):05d}{SHARD_SUFFIX}"
        writer = array_record_module.ArrayRecordWriter(str(path), WRITER_OPTIONS)
        partial.append((path, 0))
      writer.write(encode(record))
      partial[-1] = (partial[-1][0], partial[-1][1] + 1)
    if writer is not None:
      writer.close()
      writer = None
  except BaseException:
    if writer is not None:
      writer.close()
    for path, _ in partial:
      path.unlink(missing_ok=True)
    raise
  shards = []
  for i, (path, count) in enumerate(partial):
    name = shard_name(i, len(partial))
    path.rename(out / name)
    shards.append({"file": name, "count": count})
  total = sum(s["count"] for s in shards)
  metadata = {"format": FORMAT, "count": total, "shards": shards, "vocab": vocab_name(vocab),
              "vocab_config": dataclasses.asdict(vocab), "args": args or {}}
  (out / METADATA).write_text(json.dumps(metadata, indent=1) + "\n")
  return total


def read_metadata(directory: str | os.PathLike) -> dict:
  """metadata.json of a record directory, checked for the fields readers rely on."""
  path = pathlib.Path(directory) / METADATA
  if not path.is_file():
    raise FileNotFoundError(f"{directory} is not a record directory: no {METADATA}")
  try:
    meta = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ValueError(f"{path}: not a {FORMAT} metadata file")
  shards = meta.get("shards")
  if (not isinstance(shards, list) or
      not all(isinstance(s, dict) and isinstance(s.get("file"), str) and
              isinstance(s.get("count"), int) for s in shards) or
      sum(s["count"] for s in shards) != meta.get("count")):
    raise ValueError(f"{path}: 'shards' must list {{file, count}} summing to 'count'")
  return meta


class RecordSource:
  """Random access to a record directory: `len(src)`, `src[i] -> Record`.

  This is grain's RandomAccessDataSource protocol, so `grain.MapDataset.source(RecordSource(d))`
  works. Shard readers open lazily and are dropped when pickled, so the source can be sent to
  grain worker processes.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)
    self.metadata = read_metadata(self.directory)
    self._files = [self.directory / s["file"] for s in self.metadata["shards"]]
    missing = [str(f) for f in self._files if not f.is_file()]
    if missing:
      raise FileNotFoundError(f"{self.directory}: shard file(s) missing: {', '.join(missing)}")
    self._ends = np.cumsum([s["count"] for s in self.metadata["shards"]], dtype=np.int64)
    self._readers: list = [None] * len(self._files)
    self._lock = threading.Lock()

  @property
  def vocab(self) -> tokens_lib.Vocab:
    """The vocabulary named in metadata.json."""
    return tokens_lib.Vocab(**self.metadata["vocab_config"])

  def __len__(self) -> int:
    return int(self.metadata["count"])

  def __repr__(self) -> str:
    return f"RecordSource({str(self.directory)!r}, {len(self)} records)"

  def locate(self, index: SupportsIndex) -> tuple[int, int]:
    """(shard number, position in that shard file) of global record `index`."""
    i = index.__index__()
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} out of range: {self.directory} holds {len(self)} records")
    shard = int(np.searchsorted(self._ends, i, side="right"))
    return shard, i - (int(self._ends[shard - 1]) if shard else 0)

  def _where(self, index: SupportsIndex) -> str:
    shard, position = self.locate(index)
    return f"{self._files[shard]}: record {position} (index {index.__index__()})"

  def read_bytes(self, index: SupportsIndex) -> bytes:
    """The raw msgpack bytes of record `index`."""
    shard, position = self.locate(index)
    reader = self._reader(shard)
    try:
      return reader.read([position])[0]
    except Exception as e:  # array_record reports damage as RuntimeError/ValueError
      raise ValueError(f"{self._where(index)} is unreadable: {e}") from None

  def __getitem__(self, index: SupportsIndex) -> Record:
    return decode(self.read_bytes(index), where=self._where(index))

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      with self._lock:
        if self._readers[shard] is None:
          path = self._files[shard]
          try:
            reader = array_record_module.ArrayRecordReader(str(path), READER_OPTIONS)
          except Exception as e:
            raise ValueError(f"{path}: not a readable ArrayRecord file: {e}") from None
          expected = self.metadata["shards"][shard]["count"]
          if reader.num_records() != expected:
            raise ValueError(f"{path}: holds {reader.num_records()} records, metadata.json says "
                             f"{expected}")
          self._readers[shard] = reader
    return self._readers[shard]

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_readers"] = [None] * len(self._files)  # native readers cannot be pickled
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def _length_bucket(n: int) -> str:
  """Power-of-two bucket "lo-hi" (inclusive) of a token count, e.g. 4096-8191."""
  if n < 1:
    return "0-0"
  lo = 1 << (n.bit_length() - 1)
  return f"{lo}-{2 * lo - 1}"


def _check(record: Record, vocab: tokens_lib.Vocab) -> tuple[int, str]:
  """(frames, "HxW") of a record after parsing it; ValueError if tokens and metadata disagree."""
  layout = tokens_lib.parse(record.tokens, vocab)
  frames = int(layout.frame.max(initial=-1)) + 1
  if frames != record.frames:
    raise ValueError(f"tokens hold {frames} frames, the record says {record.frames}")
  if frames:
    h, w = int(layout.row.max()) + 1, int(layout.col.max())  # col W is the newline column
    if (h, w) != (record.latent_h, record.latent_w):
      raise ValueError(f"first frame is {h}x{w} latent, the record says "
                       f"{record.latent_h}x{record.latent_w}")
  return frames, f"{record.latent_h}x{record.latent_w}"


def summarize(directory: str | os.PathLike, max_bad_listed: int = 20) -> dict:
  """What `python -m lumos_jax.data inspect DIR` reports, as one JSON-able dict.

  Every record is decoded and parsed with the directory's vocabulary; a record that fails, or
  whose frame count / latent size disagrees with its tokens, counts as bad and is left out of the
  histograms (so sum(frames.values()) == samples - bad).

  Returns keys: samples, bad, frames ("T" -> count), resolutions ("HxW" latent -> count),
  lengths (min, max, mean, total tokens, histogram of power-of-two buckets "lo-hi" -> count),
  vocab, bad_records (first `max_bad_listed` {index, reason}).
  """
  source = RecordSource(directory)
  vocab = source.vocab
  frames: dict[str, int] = {}
  resolutions: dict[str, int] = {}
  lengths: list[int] = []
  bad: list[dict] = []
  for i in range(len(source)):
    try:
      record = source[i]
      t, hw = _check(record, vocab)
    except ValueError as e:
      bad.append({"index": i, "reason": str(e)})
      continue
    frames[str(t)] = frames.get(str(t), 0) + 1
    if t:
      resolutions[hw] = resolutions.get(hw, 0) + 1
    lengths.append(len(record.tokens))
  histogram: dict[str, int] = {}
  for n in sorted(lengths):
    histogram[_length_bucket(n)] = histogram.get(_length_bucket(n), 0) + 1
  return {
      "samples": len(source), "bad": len(bad),
      "frames": dict(sorted(frames.items(), key=lambda kv: int(kv[0]))),
      "resolutions": dict(sorted(resolutions.items())),
      "lengths": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                  "mean": round(float(np.mean(lengths)), 1) if lengths else 0.0,
                  "total": int(sum(lengths)), "histogram": histogram},
      "vocab": source.metadata["vocab"],
      "bad_records": bad[:max_bad_listed],
  }
