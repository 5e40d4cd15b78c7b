"""What a run reports: metrics.jsonl + TensorBoard events, and the FLOP counts behind MFU (the one
FLOP model; benchmarks/generate.py uses it for the generation FLOP bound).
"""
import json
import time

import jax
from etils import epath


def forward_flops_per_token(model_cfg, keys: float) -> float:
  """Forward FLOPs of one token that attends `keys` keys: 2 x its matmul parameters (the layers'
  projections and MLP, and the visual head: the loss and the sampler never form text logits) plus
  attention (QK^T and PV: 4 x heads x head_dim per key and layer)."""
  c = model_cfg
  layer = c.d_model * c.head_dim * (2 * c.n_heads + 2 * c.n_kv_heads) + 3 * c.d_model * c.mlp_dim
  matmul = c.n_layers * layer + c.d_model * (c.vocab_size - c.visual_offset)
  return 2 * matmul + 4 * c.n_layers * c.n_heads * c.head_dim * keys


def train_flops_per_token(model_cfg, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward = 3 x forward, no remat); a block-causal query
  sees about seq_len / 2 keys."""
  return 3 * forward_flops_per_token(model_cfg, seq_len / 2)


def paths(workdir) -> tuple[epath.Path, str]:
  """(WORKDIR/metrics.jsonl, the TensorBoard directory WORKDIR/tb as tensorboardX takes it); a
  gs://bucket/run workdir keeps its scheme (tensorboardX writes gs:// with google-cloud-storage)."""
  workdir = epath.Path(workdir)
  return workdir / "metrics.jsonl", str(workdir / "tb")


class MetricsWriter:
  """metrics.jsonl + TensorBoard on process 0; nothing elsewhere."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter
      jsonl, tb = paths(workdir)
      self.jsonl = _Lines(jsonl)
      self.tb = SummaryWriter(tb)

  def write(self, step: int, values: dict):
    if not self.active:
      return
    self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
    for k, v in values.items():
      self.tb.add_scalar(k, v, step)

  def close(self):
    if self.active:
      self.jsonl.close()
      self.tb.close()


class _Lines:
  """A text file that lines are appended to, flushed after each line.

  Locally: a file opened in append mode. On an object store (a path with a scheme, gs://...)
  objects cannot be appended to (gcsfs opens mode "a" as "w") and become visible only when
  closed, so each write rewrites the whole object: the earlier lines of a resumed run survive and
  every line is readable at once (metrics files are small; writes come every log_every steps).
  """

  def __init__(self, path: epath.Path):
    self.path, self.remote = path, "://" in str(path)
    if self.remote:
      self.text = path.read_text() if path.exists() else ""
    else:
      self.file = open(path, "a")

  def write(self, line: str) -> None:
    if self.remote:
      self.text += line
      self.path.write_text(self.text)
    else:
      self.file.write(line)
      self.file.flush()

  def close(self) -> None:
    if not self.remote:
      self.file.close()


class LogWindow:
  """The step metrics of one logging window and its throughput.

  `add(step_metrics)` after every step (clu collections merge on the device: no host sync);
  `flush(step, state)` returns the window's means with lr, steps/s, tokens/s, skipped updates and,
  when `peak_flops_per_device` is set, MFU, and starts a new window.
  """

  def __init__(self, cfg, model_cfg, lr_schedule):
    self.tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    self.flops_per_token = train_flops_per_token(model_cfg, cfg.data.seq_len)
    self.peak_flops = cfg.peak_flops_per_device * jax.device_count()
    self.lr_schedule = lr_schedule
    self.collection, self.steps, self.start = None, 0, time.perf_counter()

  def add(self, step_metrics) -> None:
    self.collection = (step_metrics if self.collection is None
                       else self.collection.merge(step_metrics))
    self.steps += 1

  def flush(self, step: int, state: dict) -> dict:
    means = {k: float(v) for k, v in jax.device_get(self.collection.compute()).items()}
    now = time.perf_counter()
    sps = self.steps / (now - self.start)
    self.collection, self.steps, self.start = None, 0, now
    out = {**means, "lr": float(self.lr_schedule(step - 1)), "steps_per_sec": sps,
           "tokens_per_sec": sps * self.tokens_per_step,
           "skipped": int(jax.device_get(state["skipped"]))}
    if self.peak_flops:
      out["mfu"] = sps * self.tokens_per_step * self.flops_per_token / self.peak_flops
    return out
