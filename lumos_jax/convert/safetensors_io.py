"""Reading and writing official checkpoints' safetensors files one tensor at a time.

Reading: `OfficialTensors(hf_dir)` finds each tensor's file through `model.safetensors.index.json`
(sharded checkpoints) or by listing every `*.safetensors` file, reports shapes from the headers
alone and loads one tensor at a time as float32 (bf16/f16 checkpoints are widened: our parameters
are float32). Writing: `write_sharded` writes tensors produced one by one into shards of at most
`max_shard_bytes`, with the index transformers reads.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Iterator

import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_RAW_DTYPES = {"BF16": ml_dtypes.bfloat16}  # dtypes numpy itself lacks: read from the raw bytes


class OfficialTensors:
  """The tensors of an official checkpoint directory, by name; nothing is loaded until `get`."""

  def __init__(self, hf_dir):
    self.dir = pathlib.Path(hf_dir)
    self.file_of = self._index()

  def _index(self) -> dict[str, pathlib.Path]:
    index = self.dir / INDEX
    if index.is_file():
      weight_map = json.loads(index.read_text()).get("weight_map")
      if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: no 'weight_map' object")
      return {name: self.dir / file for name, file in weight_map.items()}
    files = sorted(self.dir.glob("*.safetensors"))
    if not files:
      raise FileNotFoundError(f"{self.dir}: no *.safetensors files and no {INDEX}")
    file_of = {}
    for path in files:
      with safe_open(path, framework="numpy") as f:
        file_of.update({name: path for name in f.keys()})
    return file_of

  def _open(self, name: str):
    """The file holding `name`, opened for this one read: safetensors memory-maps it, and a
    handle kept open keeps every page read so far resident (the whole checkpoint by the end)."""
    path = self.file_of[name]
    if not path.is_file():
      raise FileNotFoundError(f"{path} (listed for tensor {name} in {self.dir / INDEX}) not found")
    return safe_open(path, framework="numpy")

  def shape(self, name: str) -> tuple[int, ...]:
    with self._open(name) as f:
      return tuple(f.get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    """The tensor as a float32 numpy array (a copy; only this tensor is read)."""
    with self._open(name) as f:
      dtype = f.get_slice(name).get_dtype()
      if dtype not in _RAW_DTYPES:
        return np.asarray(f.get_tensor(name), dtype=np.float32)  # already a copy: no second
    return _read_raw(self.file_of[name], name, _RAW_DTYPES[dtype]).astype(np.float32)


def _read_raw(path: pathlib.Path, name: str, dtype) -> np.ndarray:
  """One tensor read from the file's own layout: u64 header length, JSON header, raw data."""
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    entry = json.loads(f.read(header_len))[name]
    start, end = entry["data_offsets"]
    f.seek(8 + header_len + start)
    data = f.read(end - start)
  return np.frombuffer(data, dtype=dtype).reshape(entry["shape"])


def plan_shards(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
  """Tensor names grouped in order into shards of at most max_shard_bytes (a bigger tensor gets
  a shard of its own)."""
  shards, current, used = [], [], 0
  for name, nbytes in sizes:
    if current and used + nbytes > max_shard_bytes:
      shards.append(current)
      current, used = [], 0
    current.append(name)
    used += nbytes
  return shards + ([current] if current else [])


def write_sharded(out_dir: pathlib.Path, shards: list[list[str]],
                  tensors: Iterable[tuple[str, np.ndarray]]) -> list[pathlib.Path]:
  """Writes `tensors` (produced in the order of `shards`) as model[-0000i-of-0000n].safetensors
  (+ the index when n > 1); holds one shard in memory at a time. Returns the files written."""
  n = len(shards)
  names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)] if n > 1 else [SINGLE]
  it: Iterator = iter(tensors)
  weight_map, total = {}, 0
  for shard, file in zip(shards, names):
    buffer = {}
    for expected in shard:
      name, array = next(it)
      if name != expected:
        raise AssertionError(f"tensor {name} produced where {expected} was planned")
      buffer[name] = np.ascontiguousarray(array)  # safetensors writes the raw buffer
      total += array.nbytes
    save_file(buffer, str(out_dir / file), metadata={"format": "pt"})
    weight_map.update({name: file for name in buffer})
  if n > 1:
    (out_dir / INDEX).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
  return [out_dir / f for f in names]
