"""The record format: ArrayRecord shards of msgpack samples, RecordSource, grain, inspect."""
import json
import pickle

import grain
import msgpack
import numpy as np
import pytest
from array_record.python import array_record_module

from lumos_jax import tokens
from lumos_jax.data import records
from lumos_jax.data.__main__ import main
from lumos_jax.data.records import Record, RecordSource


def make_records(n, seed=0):
  """n small official-layout samples (random prompt and codes), alternating int and str ids."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    t, h, w = 1 + i % 3, 4, 8
    ids = tokens.build(rng.integers(1, 8000, 5 + i), rng.integers(0, 64000, (t, h, w)), fps=12,
                       duration=2)
    out.append(Record(tokens=ids, id=i if i % 2 else f"sample-{i}",
                      caption=f"caption {i}" * (i % 2), fps=12, duration=2, frames=t,
                      latent_h=h, latent_w=w, source=f"test/{i}"))
  return out


def test_round_trip_through_shards(tmp_path):
  originals = make_records(7)
  assert records.write_records(tmp_path / "d", originals, shard_size=3, args={"why": "test"}) == 7
  names = sorted(p.name for p in (tmp_path / "d").iterdir())
  assert names == ["metadata.json"] + [f"records-0000{i}-of-00003.array_record" for i in range(3)]
  meta = json.loads((tmp_path / "d/metadata.json").read_text())
  assert (meta["count"], meta["vocab"], meta["args"]) == (7, "lumos", {"why": "test"})
  assert [s["count"] for s in meta["shards"]] == [3, 3, 1]
  source = RecordSource(tmp_path / "d")
  assert len(source) == 7 and source.vocab == tokens.LUMOS
  for i, want in enumerate(originals):
    got = source[i]
    assert got == want
    assert got.tokens.dtype == np.int32 and isinstance(got.id, type(want.id))
  assert source[4] != source[5]
  with pytest.raises(IndexError):
    source[7]
  with pytest.raises(FileExistsError):
    records.write_records(tmp_path / "d", originals)


def test_grain_map_dataset_and_pickling(tmp_path):
  originals = make_records(5)
  records.write_records(tmp_path / "d", originals, shard_size=2)
  source = RecordSource(tmp_path / "d")
  dataset = grain.MapDataset.source(source).map(lambda r: (r.id, len(r.tokens)))
  assert list(dataset) == [(r.id, len(r.tokens)) for r in originals]
  shuffled = grain.MapDataset.source(source).shuffle(seed=1)
  assert sorted(str(r.id) for r in shuffled) == sorted(str(r.id) for r in originals)
  # grain workers receive the source pickled: open readers must not travel, reads must still work
  copy = pickle.loads(pickle.dumps(source))
  assert copy[3] == originals[3]


def test_record_rejects_bad_fields():
  with pytest.raises(ValueError, match="1-D integer"):
    Record(tokens=np.zeros((2, 2), np.int32), id=0)
  with pytest.raises(ValueError, match="beyond int32"):
    Record(tokens=np.array([2**40]), id=0)
  with pytest.raises(ValueError, match="id must be a str or int"):
    Record(tokens=np.zeros(3, np.int32), id=1.5)
  with pytest.raises(ValueError, match="frames must be a non-negative int"):
    Record(tokens=np.zeros(3, np.int32), id=0, frames=-1)


def _replace_shard(directory, payloads):
  """Overwrites the single shard of `directory` with raw `payloads` (metadata count kept right)."""
  path = directory / records.shard_name(0, 1)
  writer = array_record_module.ArrayRecordWriter(str(path), records.WRITER_OPTIONS)
  for p in payloads:
    writer.write(p)
  writer.close()
  return path


def test_corrupt_and_foreign_records_name_file_and_index(tmp_path):
  good = make_records(4)
  records.write_records(tmp_path / "d", good)
  fields = msgpack.unpackb(records.encode(good[0]))
  path = _replace_shard(tmp_path / "d", [
      records.encode(good[0]),
      b"\xc1 not msgpack",  # 0xc1 is never valid msgpack
      msgpack.packb([1, 2, 3]),  # msgpack, but not a map
      msgpack.packb(dict(fields, tokens=b"\x00\x01\x02")),  # 3 bytes: not int32 tokens
  ])
  source = RecordSource(tmp_path / "d")
  assert source[0] == good[0]
  for i, what in [(1, "not a msgpack record"), (2, "expected a msgpack map"), (3, "int32 bytes")]:
    with pytest.raises(ValueError, match=what) as info:
      source[i]
    assert f"{path}: record {i}" in str(info.value)
  missing = dict(fields)
  del missing["frames"]
  with pytest.raises(ValueError, match="missing field"):
    records.decode(msgpack.packb(missing), where="x")
  # a shard that is not ArrayRecord at all
  path.write_bytes(b"garbage" * 100)
  with pytest.raises(ValueError, match=str(path)):
    RecordSource(tmp_path / "d")[0]


def test_inspect_counts_and_bad_records(tmp_path, capsys):
  originals = make_records(6)
  # a record whose metadata disagrees with its tokens counts as bad
  originals[5] = Record(tokens=originals[5].tokens, id=5, frames=9, latent_h=4, latent_w=8)
  records.write_records(tmp_path / "d", originals, shard_size=4)
  assert main(["inspect", str(tmp_path / "d"), "--json"]) == 1  # bad records -> status 1
  summary = json.loads(capsys.readouterr().out)
  assert summary["samples"] == 6 and summary["bad"] == 1
  assert summary["frames"] == {"1": 2, "2": 2, "3": 1}
  assert summary["resolutions"] == {"4x8": 5}
  assert summary["bad_records"][0]["index"] == 5
  assert "tokens hold 3 frames, the record says 9" in summary["bad_records"][0]["reason"]
  lengths = [len(r.tokens) for r in originals[:5]]
  assert (summary["lengths"]["min"], summary["lengths"]["max"]) == (min(lengths), max(lengths))
  assert sum(summary["lengths"]["histogram"].values()) == 5
  assert main(["inspect", str(tmp_path / "d")]) == 1
  text = capsys.readouterr().out
  assert "samples      6" in text and "bad record 5:" in text


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"[1, 2]", b"{not json"])
def test_garbage_metadata_names_the_file(tmp_path, garbage):
  (tmp_path / records.METADATA).write_bytes(garbage)
  with pytest.raises(ValueError, match=rf"{tmp_path / records.METADATA}: not"):
    RecordSource(tmp_path)
