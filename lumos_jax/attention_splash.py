"""TPU splash attention (Pallas) for the layout-driven attention contract of `attention`.

`splash(q, k, v, k_start, k_end, plan=...)` computes what `attention.dense` computes: query q
attends keys k_start[q] <= k < k_end[q], softmax scale D**-0.5, softmax in float32. Shapes:
q [B, L, Hq, D]; k, v [B, L, Hkv, D] (Hq a multiple of Hkv: query head h * G + g reads key/value
head h, G = Hq // Hkv); k_start, k_end int32 [B, L]; returns [B, L, Hq, D] in q's dtype.
Self-attention only (L queries = L keys = `plan.length`).

How the two bounds map onto the kernel
--------------------------------------
Splash attention (jax.experimental.pallas.ops.tpu.splash_attention) skips the (q, k) blocks a
*static* mask rules out and ANDs that mask with *dynamic* segment ids (q attends k only when
their ids are equal).

  upper bound k < k_end[q]: static, from the `attention_plan.AttentionPlan` (k_end is one grid for
    the whole batch). `_KeyEndMask` is a computable mask: the kernel evaluates `k < k_end[q]` on
    the fly from one int32 per query (k_end is the data the mask carries in place of splash's
    usual query index), so nothing of size L x L is built or stored, on the host or on the chip,
    and fully masked blocks (everything above the frame blocks) are skipped.
  lower bound k >= k_start[q]: dynamic, as segment ids equal to k_start. Where the plan records
    k_start == 0 for every query (`Band.from_zero`: no packing, padding or left pads), there is
    no lower bound and no segment ids are passed.

Precondition (what makes segment ids exact): within the keys a query may reach,
[0, k_end[q]), the keys with k >= k_start[q] are exactly the keys with k_start[k] == k_start[q].
The layouts this codebase produces satisfy it: `tokens.pack` / `tokens.pad` give every token of a
packed sample k_start = the sample's offset and every padding token k_start = its own index, and
the sampler's left-padded row is padding tokens followed by one sample; a query's key range starts
where its segment starts and never reaches past it. A layout where a query's range starts inside
a run of another k_start (e.g. a sliding window) would be computed wrongly; `check_segments`
verifies the precondition on concrete key ranges.

The kernel does not scale logits, so q is scaled by D**-0.5 (in float32) before the call. Kernel
blocks are multiples of 128 tokens: the sequence is padded to a multiple of the block size with
causal tokens (k_end = q + 1; with segment ids, each its own segment); no real query reaches a
padded key, and the padded outputs are sliced off. Kernels are per example: the batch is
vmapped; GQA is splash's own (its MHA kernel reads kv head h // G for query head h). Gradients
come from splash's custom VJP (fused dq/dk/dv kernel by default), in interpret mode as on TPU.

The kernel for a (plan, padded length, heads, block sizes) is built once and cached: splash
reads the mask block by block on the host (~3 s for a 90k-token official video at 512 blocks).
Written against jax 0.11's splash, including its `_ComputableMask` (a private class).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sa_mask

from lumos_jax.attention_plan import AttentionPlan

_LANES = 128  # splash blocks (and segment-id tiles) are multiples of the TPU lane width


def _before_end(end, key):
  """Mask function: `end` is the query's k_end (the mask's q_sequence), `key` the key index.
  Module-level so that it hashes stably (it is a static argument of the kernel's jit)."""
  return key < end


class _KeyEndMask(sa_mask._ComputableMask):
  """[L, L] mask `k < k_end[q]`, computed in the kernel from k_end int32 [L].

  Splash hands the mask function `q_sequence[q]` (normally q itself) and the key index; storing
  k_end there makes the mask one compare per element whatever the band grid looks like.
  """

  def __init__(self, k_end: np.ndarray):
    super().__init__((len(k_end), len(k_end)), _before_end)
    self.q_sequence = np.asarray(k_end, np.int32)

  def __getitem__(self, idx) -> np.ndarray:
    # Splash reads the mask block by block on the host to find the blocks it can skip or need not
    # mask; nearly all blocks are uniform, and answering those from the block's range of k_end
    # instead of comparing every element makes a 90k-token plan ~10x faster to build (~3 s).
    if len(idx) != 2 or not all(isinstance(s, slice) for s in idx):
      return super().__getitem__(idx)  # raises splash's NotImplementedError
    rows, cols = (sa_mask._fill_slice(s, n) for s, n in zip(idx, self.shape))
    ends = self.q_sequence[rows]
    if len(ends) and cols.stop > cols.start:
      shape = (rows.stop - rows.start, cols.stop - cols.start)
      if ends.min() >= cols.stop:
        return np.ones(shape, np.bool_)
      if ends.max() <= cols.start:
        return np.zeros(shape, np.bool_)
    return super().__getitem__(idx)

  def __eq__(self, other):
    return isinstance(other, _KeyEndMask) and np.array_equal(self.q_sequence, other.q_sequence)

  def __hash__(self):
    return hash((type(self), self.q_sequence.tobytes()))


def key_end(plan: AttentionPlan, length: int) -> np.ndarray:
  """int32 [length]: each query's k_end per the plan's bands; queries past `plan.length`
  (padding to the block size) attend only themselves."""
  end = np.arange(1, length + 1, dtype=np.int32)
  for band in plan.bands:
    if not band.causal:
      end[band.lo:band.hi] = band.key_hi
  return end


def check_segments(k_start, k_end) -> None:
  """Raises ValueError if concrete key ranges int [B, L] (or [L]) break `splash`'s precondition:
  k_start must be constant over [k_start[q], k_end[q]) for every query q (so that "same k_start"
  equals "k >= k_start[q]" below k_end[q]; keys before k_start[q] have k_start[k] <= k <
  k_start[q] in any causal layout)."""
  k_start, k_end = np.atleast_2d(k_start), np.atleast_2d(k_end)
  for row, (s, e) in enumerate(zip(k_start, k_end)):
    change = np.flatnonzero(np.diff(s)) + 1  # first index of each run of equal k_start
    bounds = np.concatenate([[0], change, [len(s)]])
    run = np.searchsorted(bounds, np.arange(len(s)), side="right") - 1
    bad = np.flatnonzero((s < bounds[run]) | (e > bounds[run + 1]))
    if bad.size:
      q = int(bad[0])
      raise ValueError(f"row {row}, query {q}: key range [{s[q]}, {e[q]}) is not one run of equal "
                       f"k_start ({s[bounds[run[q]]]} on [{bounds[run[q]]}, "
                       f"{bounds[run[q] + 1]})): splash's segment ids cannot express it")


def _block_sizes(block_sizes, length: int) -> sa.BlockSizes:
  """A splash BlockSizes for `length` tokens: given as one, as an int (every kernel), or chosen as
  the largest of 512 / 256 / 128 that pads the sequence by at most ~6%."""
  if isinstance(block_sizes, sa.BlockSizes):
    return block_sizes
  if block_sizes is None:
    fits = [b for b in (512, 256) if -length % b <= length / 16]
    block_sizes = fits[0] if fits else _LANES
  if block_sizes % _LANES:
    raise ValueError(f"splash block size {block_sizes} is not a multiple of {_LANES}")
  b = int(block_sizes)
  # The fused backward kernel computes dq with dk/dv: one kernel fewer per step.
  return sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                       block_kv_dkv_compute=b, use_fused_bwd_kernel=True)


def _padded_length(sizes: sa.BlockSizes, length: int) -> int:
  """`length` rounded up to a multiple of every block size the kernels use."""
  blocks = [b for b in (sizes.block_q, sizes.block_kv, sizes.block_q_dkv, sizes.block_kv_dkv,
                        sizes.block_q_dq, sizes.block_kv_dq) if b]
  step = int(np.lcm.reduce(blocks))
  return length + (-length % step)


@functools.lru_cache(maxsize=32)
def _kernel(plan: AttentionPlan, length: int, heads: int, sizes: sa.BlockSizes, interpret: bool):
  """The splash kernel of a plan padded to `length` (cached: building the block-sparse mask info
  is host work over every block pair)."""
  mask = sa.MultiHeadMask([_KeyEndMask(key_end(plan, length))] * heads)
  # The kernel holds its mask info as jax arrays; made under a trace they would be that trace's
  # tracers, and the cache would leak them into the next call.
  with jax.ensure_compile_time_eval():
    return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


def splash(q, k, v, k_start, k_end, *, plan: AttentionPlan | None = None, interpret=None,
           block_sizes=None, **unused):
  """Splash attention under the plan's key ends and the traced `k_start` (module docstring).

  `k_end` is not read: the plan is its static form (`attention_plan.check` verifies a batch).
  `interpret=None` runs the Pallas interpreter everywhere but on TPU. `block_sizes`: None (chosen
  from the length), an int multiple of 128, or a splash `BlockSizes`.
  """
  del k_end, unused
  lq, lk = q.shape[1], k.shape[1]
  if plan is None:
    raise ValueError("splash attention needs a static attention plan: pass "
                     "plan=attention_plan.plan_of(k_start, k_end) from concrete key ranges")
  if lq != lk or lq != plan.length:
    raise ValueError(f"splash is self-attention over the plan's sequence: got {lq} queries, "
                     f"{lk} keys, plan length {plan.length}")
  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  sizes = _block_sizes(block_sizes, lq)
  length = _padded_length(sizes, lq)
  kernel = _kernel(plan, length, q.shape[2], sizes, bool(interpret))
  pad = length - lq
  scaled = (q.astype(jnp.float32) * q.shape[-1] ** -0.5).astype(q.dtype)

  def heads_first(x):  # [B, L, H, D] -> [B, H, length, D]: splash's per-example layout
    return jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  q, k, v = heads_first(scaled), heads_first(k), heads_first(v)
  if all(band.from_zero for band in plan.bands):
    # k_start == 0 everywhere: the static mask is the whole layout and segment ids (a compare and
    # two loads per block) are skipped. The block padding queries then see real keys, but their
    # outputs are sliced off, so they add nothing to the outputs or to the gradients.
    out = jax.vmap(kernel)(q, k, v)
  else:
    # Padding tokens get k_start = their own index: one-token segments, as `tokens.pack` makes.
    segments = jnp.concatenate(
        [k_start.astype(jnp.int32),
         jnp.broadcast_to(jnp.arange(lq, length, dtype=jnp.int32), (k_start.shape[0], pad))],
        axis=1)
    out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, sa.SegmentIds(q=s, kv=s)))(q, k, v, segments)
  return out.transpose(0, 2, 1, 3)[:, :lq].astype(scaled.dtype)
