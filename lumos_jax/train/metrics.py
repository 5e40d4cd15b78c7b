"""What a run reports: metrics.jsonl + TensorBoard events, and the FLOP counts behind MFU (the one
FLOP model; `benchmarks/` uses it too).
"""
import json
import pathlib

import jax


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


class MetricsWriter:
  """metrics.jsonl + TensorBoard on process 0; nothing elsewhere."""

  def __init__(self, workdir: pathlib.Path):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter
      self.jsonl = open(workdir / "metrics.jsonl", "a")
      self.tb = SummaryWriter(str(workdir / "tb"))

  def write(self, step: int, values: dict):
    if not self.active:
      return
    self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
    self.jsonl.flush()
    for k, v in values.items():
      self.tb.add_scalar(k, v, step)

  def close(self):
    if self.active:
      self.jsonl.close()
      self.tb.close()
