"""Token records as TFDS datasets, read TF-free into grain.

Two builders, registered when this module is imported (so `tfds.builder` / `tfds.data_source`
find them by name in a process that imported it):

  lumos_synthetic   the embedded procedural videos (lumos_jax.synthetic.dataset): split `train`
                    is samples 0..train_count-1 of dataset `seed`, split `eval` samples
                    0..eval_count-1 of dataset `seed + 1` (what the trainer writes for
                    data.kind="synthetic"). Configs: `default` (2000 / 64, seed 0, the generator's
                    8 frames of 32 px; the demo trains on 4 of 24 px) and
                    `tiny` (64 / 8, seed 0, configs/tiny.py); `prepare` builds others by name.
  lumos_records     an existing record directory (e.g. written by `python -m lumos_jax.data
                    import-lumos`), given as TFDS's manual_dir: a record directory is split
                    `train`; a directory of record directories gives one split per subdirectory
                    (`train/`, `eval/`, ...). Configs: `default`; any other name (e.g.
                    `lumos_records/videos_7f`) through `prepare`.

Both write ArrayRecord files (`file_format="array_record"`), in generation order (no TFDS
shuffling: grain shuffles with the pipeline seed), so index i of a split is record i of the
source. Features of one example: `tokens` int32 [L], `id`, `caption`, `source` (text; an int id is
stored as its decimal text), `fps`, `duration`, `frames`, `latent_h`, `latent_w` (int32). The
vocabulary of the token ids is in the dataset metadata (`info.metadata["vocab"]`,
`["vocab_config"]`, as in a record directory's metadata.json); `vocab(info)` rebuilds it.

Reading: `TfdsSource(name, split, data_dir)` is a grain random-access source of `records.Record`s
(what `RecordSource` gives for a record directory); `tfds.data_source(name, split=..,
data_dir=..)` gives the raw feature dicts (text as bytes). Neither imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any, SupportsIndex

import numpy as np
import tensorflow_datasets as tfds

from lumos_jax import tokens as tokens_lib
from lumos_jax.data import records
from lumos_jax.synthetic import dataset as synthetic

SYNTHETIC = "lumos_synthetic"
RECORDS = "lumos_records"
# Every records.Record field but `tokens` (a new Record field needs a feature and a new VERSION).
TEXT_FIELDS = ("id", "caption", "source")
INT_FIELDS = ("fps", "duration", "frames", "latent_h", "latent_w")
_SPLIT_NAME = re.compile(r"^\w+$")


def features() -> tfds.features.FeaturesDict:
  """The feature spec of one record. Tokens are stored as raw int32 bytes (one copy to decode)."""
  spec: dict[str, Any] = {"tokens": tfds.features.Tensor(
      shape=(None,), dtype=np.int32, encoding=tfds.features.Encoding.BYTES)}
  spec.update({name: tfds.features.Text() for name in TEXT_FIELDS})
  spec.update({name: np.int32 for name in INT_FIELDS})
  return tfds.features.FeaturesDict(spec)


def to_example(record: records.Record) -> dict:
  """A record as a TFDS example dict (the id as text)."""
  example = {name: getattr(record, name) for name in (*TEXT_FIELDS, *INT_FIELDS)}
  example["id"] = str(record.id)
  example["tokens"] = record.tokens
  return example


def to_record(example: dict) -> records.Record:
  """A decoded TFDS example (text as bytes or str) as a `records.Record` (its id a str)."""
  text = {k: v.decode("utf-8") if isinstance(v, bytes) else str(v)
          for k, v in ((name, example[name]) for name in TEXT_FIELDS)}
  return records.Record(tokens=example["tokens"], **text,
                        **{name: int(example[name]) for name in INT_FIELDS})


def vocab_metadata(vocab: tokens_lib.Vocab) -> dict:
  """A dataset's metadata about its vocabulary (as in a record directory's metadata.json)."""
  return {"vocab": records.vocab_name(vocab), "vocab_config": dataclasses.asdict(vocab)}


def vocab(info: tfds.core.DatasetInfo) -> tokens_lib.Vocab:
  """The vocabulary of a dataset built here, from `info.metadata["vocab_config"]`."""
  config = (info.metadata or {}).get("vocab_config")
  if not isinstance(config, dict):
    raise ValueError(f"TFDS dataset {info.full_name} names no token vocabulary: its metadata has "
                     f"no 'vocab_config' (build it with lumos_jax.data.tfds)")
  return tokens_lib.Vocab(**config)


class _TokenRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What both builders share: features, ArrayRecord files, generation order, vocab metadata."""

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> tfds.core.Path:
    # tfds 4.9.10 works this out for a class inside a package through the `importlib_resources`
    # backport, which it installs only before Python 3.9 (ModuleNotFoundError when building):
    # the file that defines the class is the answer it would reach.
    return tfds.core.Path(inspect.getfile(cls))

  def _metadata(self) -> dict:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__class__.__doc__, features=features(),
        metadata=tfds.core.MetadataDict(self._metadata()),
        disable_shuffling=True)  # index i of a split is record i of the source; grain shuffles

  def _generate_examples(self, records_iter) -> Iterator[tuple[int, dict]]:
    # Integer keys: with disable_shuffling TFDS writes in key order.
    for i, record in enumerate(records_iter):
      yield i, to_example(record)


@dataclasses.dataclass
class SyntheticBuilderConfig(tfds.core.BuilderConfig):
  """A variant of the synthetic dataset: split sizes, dataset seed and video geometry."""
  train_count: int = synthetic.TRAIN_COUNT
  eval_count: int = synthetic.EVAL_COUNT
  seed: int = 0
  frames: int = synthetic.SyntheticConfig.frames
  frame_px: int = synthetic.SyntheticConfig.frame_px
  patch_px: int = synthetic.SyntheticConfig.patch_px
  distractors: int = synthetic.SyntheticConfig.distractors
  cells_per_patch: int = synthetic.SyntheticConfig.cells_per_patch
  sizes: tuple[int, ...] = synthetic.SyntheticConfig.sizes
  speeds: tuple[int, ...] = synthetic.SyntheticConfig.speeds

  def geometry(self) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(frame_px=self.frame_px, patch_px=self.patch_px,
                                     frames=self.frames, distractors=self.distractors,
                                     cells_per_patch=self.cells_per_patch,
                                     sizes=tuple(self.sizes), speeds=tuple(self.speeds))

  def settings(self) -> dict:
    """The generator settings (what the dataset metadata records as `generator`, in JSON types:
    sizes and speeds as lists). The later settings (`_LATER_SETTINGS`) only when not the
    generator's default: datasets built before those settings existed keep matching."""
    default = synthetic.SyntheticConfig()
    mine = {f: _as_json(getattr(self, f)) for f in SYNTHETIC_SETTINGS}
    return {f: v for f, v in mine.items()
            if f not in _LATER_SETTINGS or v != _as_json(getattr(default, f))}


def _as_json(value):
  """A tuple (sizes, speeds) as a list, as the metadata's JSON gives it back."""
  return list(value) if isinstance(value, tuple) else value


SYNTHETIC_SETTINGS = ("train_count", "eval_count", "seed", "frames", "frame_px", "patch_px",
                      "distractors", "cells_per_patch", "sizes", "speeds")
_LATER_SETTINGS = ("distractors", "cells_per_patch", "sizes", "speeds")  # recorded if not default


class LumosSynthetic(_TokenRecords):
  """The embedded procedural video dataset (one coloured shape moving in a straight line,
  captioned "a red circle moves left") in the official token layout with the compact vocabulary:
  split `train` is samples 0..train_count-1 of dataset `seed`, `eval` of dataset `seed + 1`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: lumos_jax.synthetic.dataset samples as token records "
                            "(compact vocabulary), splits train (seed) and eval (seed + 1)."}
  BUILDER_CONFIGS = [
      SyntheticBuilderConfig(name="default", description="2000 train / 64 eval videos, seed 0, "
                             "8 frames of 32x32 px (the generator's defaults)"),
      SyntheticBuilderConfig(name="tiny", train_count=64, eval_count=8,
                             description="64 train / 8 eval videos, seed 0 (configs/tiny.py)"),
  ]

  def _metadata(self) -> dict:
    return {**vocab_metadata(tokens_lib.Vocab.compact()),
            "generator": self.builder_config.settings()}

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    c = self.builder_config
    splits = {"train": (c.train_count, c.seed), "eval": (c.eval_count, c.seed + 1)}
    return {split: self._generate_examples(synthetic.samples(count, seed, c.geometry()))
            for split, (count, seed) in splits.items() if count > 0}


class LumosRecords(_TokenRecords):
  """Token records of a record directory (lumos_jax.data.records), e.g. official Lumos-1
  samples imported with `python -m lumos_jax.data import-lumos`, re-exposed unchanged."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: the records of a record directory (manual_dir), one "
                            "split per record directory, vocabulary from its metadata.json."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Write records with `python -m lumos_jax.data import-lumos INDEX... OUT` and pass OUT as "
      "manual_dir (`python -m lumos_jax.data tfds lumos_records DATA_DIR --records=OUT`). A record "
      "directory becomes split `train`; a directory of record directories (OUT/train, OUT/eval, "
      "...) gives one split per subdirectory.")

  def _split_generators(self, dl_manager):
    sources = {split: records.RecordSource(d) for split, d in
               record_splits(dl_manager.manual_dir).items()}
    vocabs = {s.vocab for s in sources.values()}
    if len(vocabs) != 1:
      raise ValueError(f"{dl_manager.manual_dir}: the split directories use different "
                       f"vocabularies ({', '.join(repr(s) for s in sources.values())})")
    self.info.metadata.update(vocab_metadata(vocabs.pop()))  # written when the build finishes
    return {split: self._generate_examples(_read_all(s)) for split, s in sources.items()}


def _read_all(source: records.RecordSource) -> Iterator[records.Record]:
  return (source[i] for i in range(len(source)))


def record_splits(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
  """split name -> record directory, for `lumos_records`'s manual_dir (see LumosRecords)."""
  directory = pathlib.Path(directory)
  if (directory / records.METADATA).is_file():
    return {"train": directory}
  subdirs = sorted(p for p in directory.iterdir() if (p / records.METADATA).is_file()) if (
      directory.is_dir()) else []
  bad = [p.name for p in subdirs if not _SPLIT_NAME.match(p.name)]
  if bad:
    raise ValueError(f"{directory}: split directory name(s) {bad} must be letters, digits or _")
  if not subdirs:
    raise FileNotFoundError(f"{directory}: expected a record directory (with {records.METADATA}) "
                            "or a directory of them (one per split)")
  return {p.name: p for p in subdirs}


# ---- building -----------------------------------------------------------------------------------

def synthetic_config(config_name: str | None, **settings) -> SyntheticBuilderConfig:
  """The `lumos_synthetic` config named `config_name` (None: `default`).

  `settings` (SYNTHETIC_SETTINGS; None values ignored) define a new config and are refused for a
  predefined one, so that one name always means one dataset.
  """
  settings = {k: v for k, v in settings.items() if v is not None}
  unknown = set(settings) - set(SYNTHETIC_SETTINGS)
  if unknown:
    raise ValueError(f"{SYNTHETIC}: unknown setting(s) {sorted(unknown)}; expected "
                     f"{', '.join(SYNTHETIC_SETTINGS)}")
  predefined = LumosSynthetic.builder_configs
  name = config_name or "default"
  if name in predefined:
    if settings:
      raise ValueError(f"{SYNTHETIC}/{name} is a predefined config "
                       f"({predefined[name].settings()}); name a new one to change "
                       f"{', '.join(sorted(settings))}, e.g. {SYNTHETIC}/my_videos")
    return predefined[name]
  config = SyntheticBuilderConfig(name=name, **settings)
  config.geometry()  # fails early (ValueError) on an impossible geometry
  config.description = f"custom: {config.settings()}"
  return config


def prepare(name: str, data_dir: str | os.PathLike, *, records_dir: str | None = None,
            **settings) -> tuple[tfds.core.DatasetBuilder, bool]:
  """Builds (download_and_prepare) `name` = "lumos_synthetic[/CONFIG]" or "lumos_records[/CONFIG]"
  (optionally ":VERSION") into `data_dir`; returns (builder, whether it was built now).

  lumos_synthetic takes `settings` (see `synthetic_config`); lumos_records takes `records_dir`
  (its manual_dir). An already prepared dataset is reused, after checking that a synthetic one
  was made with the same settings.
  """
  dataset, kwargs = parse_name(name)
  version = kwargs.get("version")
  if dataset == SYNTHETIC:
    if records_dir is not None:
      raise ValueError(f"{SYNTHETIC} is generated: it takes no records directory")
    config = synthetic_config(kwargs.get("config"), **settings)
    builder = LumosSynthetic(config=config, data_dir=data_dir, version=version)
    if builder.is_prepared() and builder.info.metadata.get("generator") != config.settings():
      raise ValueError(f"{builder.data_dir} already holds {SYNTHETIC}/{config.name} made with "
                       f"{builder.info.metadata.get('generator')}, not {config.settings()}")
    download_config = None
  else:
    if any(v is not None for v in settings.values()):
      raise ValueError(f"{RECORDS} copies a record directory: generator settings "
                       f"{sorted(k for k, v in settings.items() if v is not None)} do not apply")
    config = kwargs.get("config") or "default"
    if config not in LumosRecords.builder_configs:
      config = tfds.core.BuilderConfig(name=config)
    builder = LumosRecords(config=config, data_dir=data_dir, version=version)
    if not builder.is_prepared():
      if records_dir is None:
        raise ValueError(f"{RECORDS}: give the record directory to copy (records_dir)")
      record_splits(records_dir)  # a clear error before TFDS's AssertionError on manual_dir
    download_config = tfds.download.DownloadConfig(manual_dir=records_dir)
  if builder.is_prepared():
    return builder, False
  builder.download_and_prepare(download_config=download_config)
  return builder, True


def parse_name(name: str) -> tuple[str, dict]:
  """("lumos_synthetic" | "lumos_records", {config, version}) of a TFDS name string."""
  try:
    dataset, kwargs = tfds.core.naming.parse_builder_name_kwargs(name)
  except ValueError:
    dataset, kwargs = None, {}
  if dataset is None or dataset.name not in (SYNTHETIC, RECORDS) or set(kwargs) - {"config",
                                                                                    "version"}:
    raise ValueError(f"dataset name {name!r}: expected {SYNTHETIC} or {RECORDS}, optionally "
                     "with /CONFIG and :VERSION (e.g. lumos_synthetic/tiny:1.0.0)")
  return dataset.name, kwargs


# ---- reading ------------------------------------------------------------------------------------

def load_builder(name: str, data_dir: str | os.PathLike | None) -> tfds.core.DatasetBuilder:
  """The prepared TFDS dataset `name` in `data_dir` (None: TFDS's default directory)."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise ValueError(f"TFDS dataset {name!r} not found in {data_dir or 'the default data_dir'}: "
                     f"{' '.join(str(e).split())}") from None
  if not builder.is_prepared():
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: build "
                            f"it with `python -m lumos_jax.data tfds {name} DATA_DIR`")
  return builder


class TfdsSource:
  """One split of a prepared TFDS dataset as a grain random-access source of `records.Record`s:
  `len(src)`, `src[i]`, and `src.vocab` (as `records.RecordSource`). Pickles for grain workers.

  `split` may use TFDS slicing and sums ("train[:90%]", "train+eval"). Records have str ids
  (TFDS stores text).
  """

  def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None):
    builder = load_builder(name, data_dir)
    named = {part.split("[")[0].strip() for part in split.split("+")}  # "train[:90%]+eval"
    if not named <= set(builder.info.splits):
      raise ValueError(f"TFDS dataset {name!r} has no split {split!r} (splits: "
                       f"{', '.join(builder.info.splits)})")
    self.name, self.split, self.data_dir = name, split, str(builder.data_dir)
    self.vocab = vocab(builder.info)
    self._source = builder.as_data_source(split=split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: SupportsIndex) -> records.Record:
    return to_record(self._source[index.__index__()])

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)"


def sources_from_config(data_cfg) -> tuple[TfdsSource, TfdsSource | None]:
  """(train source, eval source or None) of a training config's `data` section with kind="tfds".

  Raises ValueError naming the config field (data.tfds_name, data.tfds_data_dir,
  data.tfds_train_split, data.tfds_eval_split) that does not lead to a prepared split.
  """
  name, data_dir = data_cfg.tfds_name, data_cfg.tfds_data_dir or None
  where = (f"config fields data.tfds_name={name!r}, data.tfds_data_dir="
           f"{data_cfg.tfds_data_dir!r}")
  if not name:
    raise ValueError("config field data.tfds_name is empty: data.kind='tfds' needs a dataset name "
                     f"such as '{SYNTHETIC}/tiny' or '{RECORDS}'")
  try:
    load_builder(name, data_dir)
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f"{where}: {e}") from None

  def split(field: str) -> TfdsSource:
    try:
      return TfdsSource(name, data_cfg[field], data_dir)
    except ValueError as e:
      raise ValueError(f"config field data.{field}={data_cfg[field]!r}: {e}") from None

  train = split("tfds_train_split")
  return train, (split("tfds_eval_split") if data_cfg.tfds_eval_split else None)
