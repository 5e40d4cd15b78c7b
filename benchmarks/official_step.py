"""official_step: the OFFICIAL Lumos-1 PyTorch training step (forward = loss; forward+backward) on
bench_small's input and model shape, so that the two can be timed side by side on one machine.

What runs: the official `model` package (alibaba-damo-academy/Lumos, `lumos-1/lumos-1/model`,
commit f7c9cd2), imported from --official_dir, not a copy: `ChameleonXLLMXForConditionalGeneration`
(Chameleon decoder with MM-RoPE positions computed in its forward), the block-causal mask from
`model.utils.create_attention_mask_t2v`, and the loss `calculate_closs_ntp_mar` with the released
scripts' flags (CEChunked, train_with_vis_tok, no NTP loss, frame_closs_recorder; z-loss 0). The
step is `forward_mask` (modeling_xllmx_chameleon.py L95-135) from its forward call on: its random
masking (mask_or_random_replace_tokens_video) is replaced by bench_small's fixed tube mask, and its
attention mask is built once before timing (that time is printed as mask_s).

Model "bench-small" as in bench_small.py: 4 layers, d 512, 8/8 heads of 64, MLP 1,536, vocabulary
129,536 (untied head), MM-RoPE, float32, seed 0 (the official `_init_weights`: N(0, 0.02)); the
official VQGAN (`model.vqmodel`) is deleted as finetune_solver_vid.py does. Input: bench_small's
`_batch` (official video sample 0 cut to --frames=2 latent frames, 8,439 tokens, tube mask at
0.711, 5,740 loss tokens); labels as the official masking leaves them (-100 on the prompt and on
unmasked content), checked to give the same loss-token set.

Get the official code and the transformers it was written for (it imports
transformers.modeling_attn_mask_utils, which transformers 5 removed; LUMOS_REFERENCE.md section 12
ran it with 4.46.3; the repo's `parity` extra pins 5.24, so 4.46.3 goes in a separate folder):

  git clone https://github.com/alibaba-damo-academy/Lumos /tmp/Lumos    # or, from a bare mirror:
  #   mkdir -p /tmp/lumos_official && git --git-dir=MIRROR archive HEAD:lumos-1/lumos-1 model \
  #     | tar -x -C /tmp/lumos_official
  python -m pip install --no-deps --target /tmp/lumos_tf446 transformers==4.46.3 \
      "tokenizers>=0.20,<0.21" "huggingface-hub>=0.23.2,<1.0"

Run (full size: minutes, and an estimated 10-15 GiB of memory, mostly logits; see below):

  python benchmarks/official_step.py --official_dir=/tmp/Lumos/lumos-1/lumos-1 \
      --transformers_dir=/tmp/lumos_tf446 [--threads=2 --repeats=3 --out=/tmp/official_step.json]
  python benchmarks/official_step.py ... --tiny     # smoke test: 1 layer, d 64, 8x8-latent frames

--official_dir is the folder that holds `model/` (/tmp/lumos_official for the archive form). Flags
--frames and --out are bench_small's (imported with it); its other flags are ignored here.

Printed, and written to --out as JSON: forward s (under torch.no_grad: no autograd graph is kept)
and forward+backward s (zero_grad(set_to_none) + forward + loss.backward()), each the median of
--repeats timed runs after one untimed warm-up; user and system CPU s and minor page faults of the
timed forward+backward (medians); the process's peak RSS; an analytic forward FLOP count.

Caveats (read before comparing with bench_small):
  * float32 without autocast, one process, no FSDP: the released runs use bf16 autocast and FSDP
    mixed precision. torch threads = --threads (default 2); JAX is imported (by the input helpers)
    but does no work.
  * --checkpointing (default on, like exps/*.sh) wraps every decoder layer in torch's
    checkpoint_wrapper(NO_REENTRANT), as finetune.py does: the analogue of our remat "layer";
    --nocheckpointing keeps every activation (our "none").
  * Attention is config._attn_implementation = --torch_attention: "sdpa" (default; what
    from_pretrained picks under transformers 4.46) gets the additive [1, 1, L, L] float32 mask
    (285 MB at 8,439 tokens); on the CPU torch runs it with its flash kernel, which computes
    every query-key pair, masked ones included. "eager" keeps [1, 8, L, L] float32 scores per
    layer (2.3 GB each at 8,439 tokens): with --nocheckpointing it will not fit in 23 GiB.
  * The official loss computes full-vocabulary float32 logits at every position (8,439 x 129,536
    = 4.4 GB, and as much again for their gradient), then gathers the 5,740 loss rows (3.0 GB) and
    takes a 64,000-way CE in 200-row chunks: the head is 58% of the forward FLOPs at full size.
  * MM-RoPE positions are computed inside the official forward (a Python loop over the tokens,
    timed); the attention mask is not (mask_s). The masking step is not timed either way.
  * model/utils.py imports omegaconf and torchvision at module level for helpers this does not
    call (a config reader, image_transform); empty stand-in modules are registered for that import
    only, then removed.
"""
import json
import os
import pathlib
import resource
import statistics
import sys
import time
import types
from contextlib import nullcontext
from unittest import mock

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # lumos_jax (the input helpers) imports jax

from absl import app, flags

import bench_small  # the same record, tube mask and loss tokens; defines --frames and --out

sys.path.insert(1, str(bench_small.REPO))  # this checkout's lumos_jax, as bench_small's workers

flags.DEFINE_string("official_dir", "", "folder holding the official `model/` package: "
                    "lumos-1/lumos-1 of a Lumos checkout, or an extract (see the docstring)")
flags.DEFINE_string("transformers_dir", "", "put first on sys.path before transformers is "
                    "imported: a `pip --target` folder with transformers 4.46.3 (the docstring)")
flags.DEFINE_integer("threads", 2, "torch.set_num_threads")
flags.DEFINE_integer("repeats", 3, "timed runs of each computation (medians are reported)")
flags.DEFINE_enum("torch_attention", "sdpa", ["sdpa", "eager"], "config._attn_implementation")
flags.DEFINE_bool("checkpointing", True, "the official --checkpointing: non-reentrant activation "
                  "checkpointing of every decoder layer")
flags.DEFINE_bool("tiny", False, "smoke test: 1 layer, d 64, 1 head, MLP 128, each frame cropped "
                  "to 8x8 latents (vocabulary, layout and loss path unchanged)")
FLAGS = flags.FLAGS
FLAGS.set_default("out", "/tmp/official_step.json")

GiB = 2 ** 30
SHAPES = {  # ChameleonConfig fields
    "bench-small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=8, intermediate_size=1536),
    "tiny": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                 num_key_value_heads=1, intermediate_size=128),
}
# The released scripts' settings (LUMOS_REFERENCE.md sections 5 and 7): dropout 0, z-loss 0,
# --unmask_image_logits, stage-2 max_seq_len; vocabulary_map={} since no Chameleon VQ map is used.
COMMON = dict(vocab_size=129_536, mm_rope=True, mask_image_logits=False, dropout=0.0,
              attention_dropout=0.0, z_loss_weight=0.0, rope_theta=10000.0, rms_norm_eps=1e-5,
              max_position_embeddings=65_536, tie_word_embeddings=False, vocabulary_map={})
# The `self.args` fields calculate_closs_ntp_mar reads, as exps/*Stage_2*.sh set them.
LOSS_ARGS = types.SimpleNamespace(compute_ntp_loss=False, train_loss="CEChunked",
                                  decay_start_coef=None, train_with_vis_tok=True,
                                  vis_tok_start=65_536, frame_closs_recorder=True, mask_type="tube")
TINY_GRID = 8  # latent rows and columns kept per frame in --tiny


def _special_tokens() -> dict:
  """finetune_solver_vid.py's `special_token` dict, from our vocabulary (same ids)."""
  from lumos_jax.tokens import LUMOS as v
  return {"image_start_token": v.image_start, "image_end_token": v.image_end,
          "new_line_token": v.newline, "sep_token": v.sep, "video_start_token": v.video_start,
          "video_end_token": v.video_end, "mask_token": v.mask}


def _import_official():
  """The official `model` package. torch and transformers come first, so that transformers'
  availability checks never see the omegaconf/torchvision stand-ins."""
  if FLAGS.transformers_dir:
    sys.path.insert(0, str(pathlib.Path(FLAGS.transformers_dir).resolve()))
  import torch  # noqa: F401
  import transformers
  if int(transformers.__version__.split(".")[0]) >= 5:
    sys.exit(f"transformers {transformers.__version__}: the official modeling code needs 4.x (it "
             "imports transformers.modeling_attn_mask_utils); install 4.46.3 with pip --target "
             "and pass --transformers_dir (see the docstring)")
  root = pathlib.Path(FLAGS.official_dir).resolve()
  if not (root / "model" / "modeling_xllmx_chameleon.py").is_file():
    sys.exit(f"--official_dir={FLAGS.official_dir} has no model/modeling_xllmx_chameleon.py")
  sys.path.insert(0, str(root))
  stand_ins = {"omegaconf": types.ModuleType("omegaconf"),
               "torchvision": types.ModuleType("torchvision")}
  for name in ("DictConfig", "ListConfig", "OmegaConf"):
    setattr(stand_ins["omegaconf"], name, object)
  stand_ins["torchvision"].transforms = None
  missing = [n for n in stand_ins if n not in sys.modules]
  sys.modules.update({n: stand_ins[n] for n in missing})
  try:
    import model
    import model.modeling_xllmx_chameleon
    import model.utils
  finally:
    for n in missing:
      del sys.modules[n]
  return model


def _tiny_record_ids(real_record_ids):
  """`_record_ids` for --tiny: the record's prompt and header with every kept frame cropped to
  TINY_GRID x TINY_GRID latents, laid out by tokens.build (the official format)."""
  import numpy as np

  from lumos_jax import tokens

  def record_ids(frames: int):
    ids = real_record_ids(frames)
    lay = tokens.parse(ids)
    v = int(np.flatnonzero(ids == tokens.LUMOS.video_start)[0])
    assert ids[0] == tokens.LUMOS.bos and ids[v - 1] == tokens.LUMOS.sep
    h, w = int(lay.row.max()) + 1, int(lay.col.max())
    codes = (ids[lay.code] - tokens.LUMOS.visual_offset).reshape(-1, h, w)
    zero = tokens.LUMOS.number_zero
    return tokens.build(ids[1:v - 1], codes[:, :TINY_GRID, :TINY_GRID],
                        fps=int(ids[v + 2]) - zero, duration=int(ids[v + 1]) - zero)
  return record_ids


def _inputs(frames: int, tiny: bool):
  """(masked input ids [1, L], official labels [1, L]) of bench_small's batch, as int64 tensors.

  Labels as mask_or_random_replace_tokens_video leaves the stored records' labels: -100 before
  VIDEO_START and on unmasked content, the token elsewhere. The official loss keeps labels >=
  65,536: that set must equal bench_small's weights (masked code slots)."""
  import numpy as np
  import torch

  from lumos_jax import tokens
  patch = mock.patch.object(bench_small, "_record_ids",
                            _tiny_record_ids(bench_small._record_ids)) if tiny else nullcontext()
  with patch:
    batch, _ = bench_small._batch(frames)
  ids, targets = batch["inputs"][0], batch["targets"][0]
  lay = tokens.parse(targets)
  labels = targets.astype(np.int64)
  labels[:int(np.flatnonzero(targets == tokens.LUMOS.video_start)[0])] = -100
  labels[lay.content & (ids != tokens.LUMOS.mask)] = -100
  assert np.array_equal(labels >= LOSS_ARGS.vis_tok_start, batch["weights"][0] > 0)
  return torch.from_numpy(ids[None].astype(np.int64)), torch.from_numpy(labels[None])


def _official_model(official, shape: dict):
  """ChameleonXLLMXForConditionalGeneration at `shape`, float32, train mode, seed 0."""
  import functools

  import torch
  from torch.distributed.algorithms._checkpoint import checkpoint_wrapper as cw
  torch.manual_seed(0)
  # transformers 4.46 picks sdpa when none is named (as for the official from_pretrained); naming
  # it explicitly fails on the VQGAN submodel, which has no sdpa attention.
  named = {} if FLAGS.torch_attention == "sdpa" else {"attn_implementation": "eager"}
  config = official.ChameleonXLLMXConfig(**shape, **COMMON, **named)
  net = official.ChameleonXLLMXForConditionalGeneration(config)
  del net.model.vqmodel  # finetune_solver_vid.py L355: Chameleon's VQGAN is not trained
  net.float().train()
  assert net.config._attn_implementation == FLAGS.torch_attention
  if FLAGS.checkpointing:  # xllmx/solvers/finetune/finetune.py L338-365, without FSDP
    layers = net.get_checkpointing_wrap_module_list()
    cw.apply_activation_checkpointing(
        net, checkpoint_wrapper_fn=functools.partial(
            cw.checkpoint_wrapper, checkpoint_impl=cw.CheckpointImpl.NO_REENTRANT),
        check_fn=lambda module: module in layers)
  return net


def _loss(official, net, ids, labels, attention_mask):
  """forward_mask (modeling_xllmx_chameleon.py L95-135) after its masking and mask building."""
  result = official.modeling_xllmx_chameleon.ChameleonForConditionalGeneration.forward(
      net, input_ids=ids, use_cache=False, attention_mask=attention_mask)
  closs, _ = net.calculate_closs_ntp_mar(result[0], labels, cfg=LOSS_ARGS,
                                         special_token=_special_tokens(), mar_loss_weight=None)
  return closs


def _measure(fn, repeats: int) -> dict:
  """One untimed run (first touch of every buffer, oneDNN caches; its result is kept as "value"),
  then `repeats` timed runs."""
  value = fn()
  runs = [bench_small.usage(fn) for _ in range(repeats)]
  out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
  return {**out, "runs": runs, "value": value}


def _forward_flops(shape: dict, length: int) -> dict:
  """Matmul FLOPs of one forward (2 per multiply-add). Attention counts every query-key pair:
  SDPA with an additive mask skips none. The head is the full vocabulary at every position."""
  d, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
  heads, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
  hd = d // heads
  proj = 2 * length * d * (2 * heads * hd + 2 * kv * hd)  # q, o and k, v
  mlp = 2 * length * 3 * d * f
  attn = 2 * 2 * length * length * heads * hd  # scores and probabilities x values
  head = 2 * length * d * COMMON["vocab_size"]
  total = layers * (proj + mlp + attn) + head
  return {"total": total, "layers": layers * (proj + mlp + attn), "attention": layers * attn,
          "head": head}


def run() -> dict:
  """Builds the model and input, then times the forward and the forward+backward."""
  official = _import_official()
  import torch
  import transformers
  torch.set_num_threads(FLAGS.threads)
  shape = SHAPES["tiny" if FLAGS.tiny else "bench-small"]
  ids, labels = _inputs(FLAGS.frames, FLAGS.tiny)
  t0 = time.perf_counter()
  mask = official.utils.create_attention_mask_t2v(sequence=ids, special_token=_special_tokens(),
                                                  pad_id=0, rm_pad_in_image=False,
                                                  return_inverse_mask=True)
  mask_s = time.perf_counter() - t0
  net = _official_model(official, shape)
  loss = lambda: _loss(official, net, ids, labels, mask)

  def forward():
    with torch.no_grad():
      return float(loss())

  def forward_backward():
    net.zero_grad(set_to_none=True)
    loss().backward()

  flops = _forward_flops(shape, ids.shape[1])
  out = {"code": "official Lumos-1 model package", "official_dir": FLAGS.official_dir,
         "transformers": transformers.__version__, "torch": torch.__version__,
         "threads": torch.get_num_threads(), "attention": FLAGS.torch_attention,
         "checkpointing": FLAGS.checkpointing, "model": "tiny" if FLAGS.tiny else "bench-small",
         "shape": shape, "tokens": int(ids.shape[1]),
         "loss_tokens": int((labels >= LOSS_ARGS.vis_tok_start).sum()), "mask_s": mask_s,
         "fwd": _measure(forward, FLAGS.repeats),
         "fwd_bwd": _measure(forward_backward, FLAGS.repeats), "fwd_flops": flops}
  out["loss"] = out["fwd"].pop("value")
  del out["fwd_bwd"]["value"]
  out["bwd_over_fwd"] = out["fwd_bwd"]["s"] / out["fwd"]["s"]
  out["fwd_gflops_per_s"] = flops["total"] / out["fwd"]["s"] / 1e9
  out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB
  return out


def _summary(r: dict) -> str:
  fb = r["fwd_bwd"]
  return "\n".join([
      f"{r['code']} ({r['model']}), transformers {r['transformers']}, torch {r['torch']}, "
      f"{r['attention']}, checkpointing {'on' if r['checkpointing'] else 'off'}, "
      f"{r['threads']} threads",
      f"{r['tokens']} tokens, {r['loss_tokens']} loss tokens, loss {r['loss']:.4f}; attention "
      f"mask built in {r['mask_s']:.2f} s (untimed)",
      f"forward (no_grad) {r['fwd']['s']:.2f} s, forward+backward {fb['s']:.2f} s, ratio "
      f"{r['bwd_over_fwd']:.2f}; forward {r['fwd_flops']['total'] / 1e12:.3f} TFLOP "
      f"({r['fwd_flops']['head'] / r['fwd_flops']['total']:.0%} in the head), "
      f"{r['fwd_gflops_per_s']:.1f} GFLOP/s",
      f"forward+backward: user {fb['user_s']:.1f} s, sys {fb['sys_s']:.1f} s, "
      f"{fb['minor_faults'] / 1e6:.2f} M minor faults; peak RSS {r['peak_rss_gib']:.2f} GiB"])


def main(argv):
  del argv
  if not FLAGS.official_dir:
    sys.exit("pass --official_dir (the folder holding the official `model/`; see the docstring)")
  if not bench_small.RECORDS.is_dir():
    sys.exit(f"official_step needs the official records at {bench_small.RECORDS}")
  result = run()
  print(json.dumps(result))
  print(_summary(result))
  pathlib.Path(FLAGS.out).write_text(json.dumps(result, indent=1))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
