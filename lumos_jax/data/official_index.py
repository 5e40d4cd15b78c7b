"""Reading official Lumos data indexes (merge-record.json, *-record.jsonl, data .yaml), finding the
official code ROOT, and its number -> digit-token table (LUMOS_REFERENCE.md section 8)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any, TextIO

NUM2TOKENS = pathlib.Path("data") / "num2tokens.json"
OnBad = Callable[[str, str], None]  # (where: "PATH:LINE", reason) of a bad index line


@dataclasses.dataclass(frozen=True)
class Entry:
  """One line of an index: `file` as written there (relative to ROOT unless absolute)."""
  file: str
  len: int | None = None
  id: int | str | None = None


def find_root(index: str | os.PathLike) -> pathlib.Path:
  """The nearest ancestor directory of `index` that holds data/num2tokens.json."""
  start = pathlib.Path(index).resolve().parent
  for directory in (start, *start.parents):
    if (directory / NUM2TOKENS).is_file():
      return directory
  raise ValueError(f"cannot find ROOT for {index}: no ancestor directory holds {NUM2TOKENS}; "
                   "pass the official code root explicitly (--root)")


def _entry(item: Any) -> Entry:
  """One index item {file, len, id} -> Entry; ValueError saying which field is wrong."""
  if not isinstance(item, dict) or not isinstance(item.get("file"), str):
    raise ValueError(f"expected an object with a string 'file', got {item!r:.200}")
  length, ident = item.get("len"), item.get("id")
  if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
    raise ValueError(f"'len' must be an int, got {length!r:.100}")
  if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (int, str))):
    raise ValueError(f"'id' must be an int or str, got {ident!r:.100}")
  return Entry(file=item["file"], len=length, id=ident)


def _raise(where: str, reason: str):
  raise ValueError(f"{where}: {reason}")


def _read_json_index(path: pathlib.Path, on_bad: OnBad) -> list[Entry]:
  """Entries of a merge-record.json (a JSON list) or a *.jsonl (one object per line).

  A bad line or entry (not JSON, no string `file`, a `len`/`id` of the wrong type) goes to
  `on_bad(where, reason)` (where = "PATH:LINE" or "PATH: entry K") and is left out.
  """
  text = path.read_text()
  items = []
  if path.suffix == ".jsonl":
    for line_no, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          items.append((json.loads(line), f"{path}:{line_no}"))
        except json.JSONDecodeError as e:
          on_bad(f"{path}:{line_no}", f"bad index line: not JSON ({e})")
  else:
    try:
      listed = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(listed, list):
      raise ValueError(f"{path}: expected a JSON list of {{file, len, id}}, "
                       f"got {type(listed).__name__}")
    items = [(item, f"{path}: entry {k}") for k, item in enumerate(listed)]
  entries = []
  for item, where in items:
    try:
      entries.append(_entry(item))
    except ValueError as e:
      on_bad(where, f"bad index line: {e}")
  return entries


def _yaml_paths(path: pathlib.Path, log: TextIO) -> list[str]:
  """The `path` of each META item of an official data yaml."""
  import yaml  # PyYAML; only data yamls need it
  config = yaml.safe_load(path.read_text())
  meta = config.get("META") if isinstance(config, dict) else None
  if not isinstance(meta, list) or not all(
      isinstance(m, dict) and isinstance(m.get("path"), str) for m in meta):
    raise ValueError(f"{path}: expected 'META: [{{path: ..., ratio: ...}}, ...]'")
  for m in meta:
    # The official FinetuneConversationDataset never reads `ratio`: every record is used.
    if m.get("ratio", 1.0) != 1.0:
      print(f"note: {path}: ratio {m['ratio']} for {m['path']} is ignored, as in the official "
            "trainer (every record is imported)", file=log)
  return [m["path"] for m in meta]


def read_index(index: str | os.PathLike, root: str | os.PathLike, *,
               log: TextIO | None = None, on_bad: OnBad | None = None) -> list[Entry]:
  """The entries an index lists (.json, .jsonl, or a .yaml whose paths are relative to `root`).

  Notes (an ignored yaml `ratio`) go to `log` (default: sys.stderr at call time). A bad line of
  a .jsonl (or entry of a .json list) is passed to `on_bad(where, reason)`, where = "PATH:LINE"
  (or "PATH: entry K"), and left out; without `on_bad` it raises ValueError("where: reason").
  An unreadable index as a whole always raises.
  """
  on_bad = on_bad or _raise
  log = log or sys.stderr
  path = pathlib.Path(index)
  if not path.is_file():
    raise FileNotFoundError(f"index {path} does not exist")
  if path.suffix in (".yaml", ".yml"):
    entries = []
    for sub in _yaml_paths(path, log):
      sub_path = pathlib.Path(root) / sub
      if sub_path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"{path}: META path {sub} must be a .json or .jsonl index")
      entries += read_index(sub_path, root, log=log, on_bad=on_bad)
    return entries
  if path.suffix not in (".json", ".jsonl"):
    raise ValueError(f"{path}: unsupported index type {path.suffix!r} (use a merge-record.json, "
                     "a *-record.jsonl or a data .yaml)")
  return _read_json_index(path, on_bad)


def load_num2tokens(root: str | os.PathLike) -> dict[int, list[int]]:
  """ROOT/data/num2tokens.json as {n: digit token ids}, e.g. {12: [16400, 16401]}."""
  path = pathlib.Path(root) / NUM2TOKENS
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: ROOT must be the official code root holding "
                            f"{NUM2TOKENS}")
  table = json.loads(path.read_text())
  if not isinstance(table, dict) or not all(
      isinstance(k, str) and k.isdigit() and isinstance(v, list) and v and
      all(isinstance(t, int) and not isinstance(t, bool) for t in v) for k, v in table.items()):
    raise ValueError(f"{path}: expected {{\"<n>\": [digit token ids]}}")
  return {int(k): v for k, v in table.items()}


def digits(n: int, num2tokens: dict[int, list[int]]) -> list[int]:
  if n not in num2tokens:
    raise ValueError(f"no digit tokens for {n} in {NUM2TOKENS} (it covers "
                     f"{min(num2tokens)}..{max(num2tokens)})")
  return list(num2tokens[n])
