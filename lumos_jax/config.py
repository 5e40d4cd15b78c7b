"""Loading config files and turning their fields into the objects the code uses."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import ml_collections
from etils import epath

from lumos_jax import config_checks, sharding, tokens
from lumos_jax.synthetic import dataset as synthetic
from lumos_jax.model import ModelConfig

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIG = "config.json"  # WORKDIR/config.json: the config a run was trained with


def load(name_or_path: str):
  """`get_config()` of a config file, by path or by name in configs/ ("tiny", "lumos_1b")."""
  path = pathlib.Path(name_or_path)
  if not path.suffix:
    path = CONFIG_DIR / f"{name_or_path}.py"
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"lumos_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run_config_path(workdir) -> epath.Path:
  """WORKDIR/config.json; an object-store workdir (gs://bucket/run) keeps its scheme."""
  return epath.Path(workdir) / RUN_CONFIG


def save_run(cfg, workdir) -> None:
  """Writes the run's config as WORKDIR/config.json (what sampling rebuilds the model from)."""
  run_config_path(workdir).write_text(cfg.to_json_best_effort(indent=2))


def load_run(workdir) -> ml_collections.ConfigDict:
  """The config a run saved in WORKDIR/config.json."""
  path = run_config_path(workdir)
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: --workdir must be a training workdir "
                            "(python -m lumos_jax.train writes config.json there)")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


class ConfigError(ValueError):
  """A training config that cannot run. `errors` holds one line per problem, each naming the
  config field, its value and what is expected; str() is those lines joined by newlines."""

  def __init__(self, errors):
    self.errors = list(errors)
    super().__init__("\n".join(self.errors))


def check_fields(cfg) -> None:
  """Raises ConfigError with a line per bad field (`config_checks.field_errors`): the checks that
  need no devices, run before anything else (distributed setup, the workdir)."""
  errors = config_checks.field_errors(cfg)
  if errors:
    raise ConfigError(errors.values())


def validate(cfg, n_devices: int, n_processes: int = 1):
  """Checks a training config before anything loads or compiles: the type and range of every
  field of `base()` (`config_checks.field_errors`), then the mesh against the devices, the model
  against the vocabulary, the batch against the data axes, accumulation steps and processes, and
  a synthetic run's video geometry against what the generator can draw.

  Returns (mesh shape, model config, vocabulary); raises ConfigError carrying every problem found,
  one line each (checks of several fields together are left out where one of them is bad).
  """
  by_field = config_checks.field_errors(cfg)
  errors = list(by_field.values())
  # The checks of several fields together run only on fields whose own checks passed.
  ok = lambda *prefixes: not any(f.startswith(prefixes) for f in by_field)
  shape = model_cfg = None
  if ok("mesh"):
    try:
      shape = sharding.resolve_mesh_shape(cfg.mesh, n_devices)
    except ValueError as e:
      errors.append(f"config field mesh={tuple(cfg.mesh)} does not fit the {n_devices} "
                    f"devices: {e}")
  if ok("vocab", "model."):
    try:
      model_cfg = model_config(cfg)  # head_dim / MM-RoPE, GQA, vocabulary size
    except (ValueError, TypeError) as e:
      errors.append(str(e))
  if shape and ok("data.batch_size", "optim.accum_steps"):
    errors.extend(_batch_errors(cfg, shape[0] * shape[1], n_processes))
  if cfg.data.kind == "synthetic" and ok("data.synthetic_"):
    try:
      synthetic.written_config(cfg)  # sizes, speeds and frames that fit the frame
    except ValueError as e:
      d = cfg.data
      errors.append(f"config fields data.synthetic_frame_px={d.synthetic_frame_px}, "
                    f"data.synthetic_frames={d.synthetic_frames}, data.synthetic_cells_per_patch="
                    f"{d.synthetic_cells_per_patch}, data.synthetic_sizes="
                    f"{tuple(d.synthetic_sizes)}, data.synthetic_speeds="
                    f"{tuple(d.synthetic_speeds)}: the synthetic generator refuses them: {e}")
  if errors:
    raise ConfigError(errors)
  return shape, model_cfg, vocab(cfg)


def _batch_errors(cfg, batch_shards: int, n_processes: int) -> list[str]:
  """The batch splits into data shards x accumulation steps, and over the processes."""
  errors, batch, accum = [], cfg.data.batch_size, cfg.optim.accum_steps
  if batch % (batch_shards * accum):
    errors.append(f"config field data.batch_size={batch} must be divisible by the data axes "
                  f"(data x fsdp = {batch_shards}) times optim.accum_steps={accum} (the "
                  f"per-device batch {batch / batch_shards:g} split into {accum} micro-batches)")
  if batch % n_processes:
    errors.append(f"config field data.batch_size={batch} must be divisible by the "
                  f"{n_processes} processes")
  return errors


def vocab(cfg) -> tokens.Vocab:
  """The vocabulary a config names: "lumos" (official) or "compact" (small models)."""
  if cfg.vocab == "lumos":
    return tokens.LUMOS
  if cfg.vocab == "compact":
    return tokens.Vocab.compact()
  raise ValueError(f"config field vocab={cfg.vocab!r}: expected 'lumos' or 'compact'")


def model_config(cfg) -> ModelConfig:
  """The decoder config, checked against the vocabulary the data uses."""
  model_cfg = ModelConfig.from_config(cfg.model)
  v = vocab(cfg)
  if model_cfg.vocab_size < v.size:
    raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the {cfg.vocab!r} "
                     f"vocabulary ({v.size} ids)")
  if model_cfg.visual_offset != v.visual_offset:
    raise ValueError(f"model.visual_offset={model_cfg.visual_offset} does not match the first "
                     f"visual id of the {cfg.vocab!r} vocabulary ({v.visual_offset})")
  return model_cfg


def base(model: dict, *, vocab: str) -> ml_collections.ConfigDict:
  """Every field a training config has, with the Lumos recipe's values (LUMOS_REFERENCE.md
  section 7) where it has one. Config files call this and override what differs."""
  cfg = ml_collections.ConfigDict()
  cfg.seed = 0
  cfg.steps = 1000  # optimizer steps
  cfg.checkpoint_every = 500
  cfg.keep_checkpoints = 3
  cfg.log_every = 10
  cfg.eval_every = 0  # 0: no periodic eval
  cfg.eval_batches = 4
  cfg.max_bad_steps = 10  # consecutive non-finite steps before the run stops
  cfg.loss_chunk = 256  # positions per chunk of the loss
  cfg.memory_budget_gib = 0.0  # per device, for model.remat="auto"; 0: what the device has
  cfg.peak_flops_per_device = 0.0  # for MFU; 0: unknown, MFU not logged
  cfg.profile_steps = ()  # (first, stop): write a profiler trace of those steps to WORKDIR/profile
  # A run workdir (ours, or `python -m lumos_jax.convert import`) whose latest parameters start
  # this run, with a fresh optimizer at step 0; used only while this run has no checkpoint.
  cfg.init_from = ""
  cfg.vocab = vocab
  cfg.mesh = (1, -1, 1)  # (data, fsdp, tensor); -1 absorbs the remaining devices
  cfg.model = ml_collections.ConfigDict(dict(
      rope_variant="mm", rope_theta=10000.0, norm_eps=1e-5, dtype="float32", remat="full",
      attention="xla", attention_block_q=256, init_std=0.02, scan_unroll=1,
      max_lookahead=tokens.frame_block_length(48, 84) - 1))  # a 384p frame (48 x 84 latents)
  cfg.model.update(model)
  cfg.optim = ml_collections.ConfigDict(dict(
      lr=1e-4, min_lr=1e-4, warmup_steps=100, schedule="constant", b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.1, clip=4.0, accum_steps=1))
  # kind: "records" (train/weights/eval: record directories), "synthetic" (generated into
  # WORKDIR/data), "tfds" (a prepared TFDS dataset of lumos_jax.data.tfds: tfds_name such as
  # "lumos_synthetic/tiny", tfds_data_dir "" for TFDS's default; tfds_eval_split "" for no eval).
  cfg.data = ml_collections.ConfigDict(dict(
      kind="records", train=(), weights=None, eval=None,
      synthetic_count=synthetic.TRAIN_COUNT, synthetic_eval_count=synthetic.EVAL_COUNT,
      synthetic_seed=0,
      synthetic_distractors=0,  # uncaptioned objects per synthetic video (the harder variant)
      synthetic_sizes=(),  # captioned shape widths in cells (odd); () keeps the generator's (5, 7)
      synthetic_speeds=(),  # captioned speeds in px/frame; () keeps the generator's (1, 2, 3)
      # frame side in pixels, frames per generated video and tokenizer cells per patch side (1 or
      # 2); 0 keeps the generator's 32, 8 and 2
      synthetic_frame_px=0, synthetic_frames=0, synthetic_cells_per_patch=0,
      tfds_name="", tfds_data_dir="", tfds_train_split="train", tfds_eval_split="eval",
      seq_len=32_768, batch_size=8, max_frames=7, cfg_drop=0.1, workers=0, strides=(4, 8, 8),
      max_consecutive_bad=1_000,  # refused records in a row before the pipeline stops the run
      # Pack several samples into each seq_len row (first fit, each sample attending only to
      # itself) instead of one padded sample per row: a 4k-token image alone in a 32k row is 87%
      # padding. Off by default so that existing runs, and their resumes, see the same batches.
      pack=False,
      # Loss weight of masked slots whose true code is visual code `background_code` (-1: none),
      # training only (measured on the demo's empty patch: README "Demo run").
      background_code=-1, background_weight=1.0,
      # history_*: per_frame masks only (lumos_jax.masking); 0 keeps every frame independent.
      mask=dict(kind="tube", schedule="cosine", min_ratio=0.7,
                history_prob=0.0, history_ratio=0.7)))
  # jax.distributed.initialize arguments (lumos_jax.train.distributed); "" / 0 / () leave a value to
  # the cluster environment jax detects (SLURM, Open MPI, Cloud TPU, Kubernetes) or its default.
  # local_device_ids: the devices this process uses (() = jax's choice: one GPU per SLURM task).
  cfg.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator="", num_processes=0, process_id=0, local_device_ids=(),
      cluster_detection_method="", coordinator_bind_address="", initialization_timeout=300,
      heartbeat_timeout_seconds=100, shutdown_timeout_seconds=300))
  return cfg
