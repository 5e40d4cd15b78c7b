"""AR-DF sampling (LUMOS_REFERENCE.md section 4): frame by frame masked decoding with a KV cache and
classifier-free guidance; text-to-image (1 frame), text-to-video, image-to-video / continuation.

  prompt -> cond sequence  [BOS] text [SEP] [VIDEO_START, dur, fps] given frames... new frames...
            uncond sequence                 [VIDEO_START, dur, fps] given frames... new frames...
The two run as one batch of 2 rows, both right-aligned to a multiple of `LENGTH_BUCKET` tokens
(front padding nothing attends to, positions restarting at 0), so every frame block sits at the
same cache index in both.

Per new frame: S steps over that frame's block only, against the cached prefix (`write=False`):
logits over the visual ids, `uncond + g * (cond - uncond)`, sample every unknown code slot, keep
fixed ones, then re-mask the m = floor(N cos(pi/2 (s+1)/S)) lowest-confidence new slots (confidence
= log p + temperature x Gumbel); the last step keeps everything. The finished frame then enters
the cache with the history mask (fraction `history_mask` of its content slots, evenly spaced, one
pattern per video: `masking.history_pattern`), and so do given (I2V) frames.

Temperature schedules (`temperature_schedule`):
  cumulative (default): the official code's tau <- tau * (1 - (s+1)/S) every step, never reset, so
    the Gumbel noise is gone after the first frame. Default because released Lumos checkpoints were
    evaluated with it.
  per_frame: tau = temperature * (1 - (s+1)/S) restarting every frame: every frame gets the same
    exploration (more varied later frames).
`cached=False` runs the same decoding by recomputing the full sequence at every step: the
reference the KV-cache path is tested against.
"""
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumos_jax import masking, rope, tokens

SCHEDULES = ("cumulative", "per_frame")
# Both rows are front-padded to a multiple of this many tokens, so that prompts of different
# lengths share one compilation of the prefill and the frame loop: the demo's evaluation compiled
# both once per caption length, ~5 s each and most of its time.
LENGTH_BUCKET = 64


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  frames: int  # new latent frames to generate
  height: int  # latent rows
  width: int  # latent columns
  fps: int = 12
  duration: int = 2  # header tokens (seconds)
  steps: int = 50
  cfg_scale: float = 15.0
  history_mask: float = 0.7
  temperature: float = 1.0
  temperature_schedule: str = "cumulative"
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1: off
  code_limit: int = 0  # sample only codes < code_limit (a tokenizer with fewer codes); 0: all
  # (visual code, logit added after guidance) pairs: -1 makes a code e times less likely. E.g.
  # the demo's empty patch (code 0): at an object's edge the chance of a covered patch is split
  # over many partial-patch codes while the empty patch's is whole, so sampling code by code
  # eroded the objects; -1 there helped a model trained without down-weighting that patch
  # (README "Demo run"; the demo now down-weights it in the loss instead).
  code_bias: tuple[tuple[int, float], ...] = ()

  def __post_init__(self):
    if self.temperature_schedule not in SCHEDULES:
      raise ValueError(f"temperature_schedule={self.temperature_schedule!r}: choose one of "
                       f"{SCHEDULES}")
    if self.frames < 1 or self.steps < 1:
      raise ValueError(f"frames={self.frames} and steps={self.steps} must be at least 1")
    codes = [c for c, _ in self.code_bias]
    if any(c < 0 or (self.code_limit and c >= self.code_limit) for c in codes) or (
        len(set(codes)) != len(codes)):
      raise ValueError(f"code_bias={self.code_bias}: codes must be distinct visual code indices "
                       f">= 0{f' and < code_limit={self.code_limit}' if self.code_limit else ''}")


@dataclasses.dataclass
class Plan:
  """The host-side layout of one request: template ids and layout arrays for both rows [2, L]
  (row 0 cond, row 1 uncond; L a multiple of `LENGTH_BUCKET`)."""
  ids: np.ndarray
  positions: np.ndarray
  index: np.ndarray
  k_start: np.ndarray
  k_end: np.ndarray
  prefix: int  # tokens before the first new frame
  block: int  # tokens per frame block
  code_slot: np.ndarray  # bool [block]: slots the sampler fills
  history_slot: np.ndarray  # bool [block]: slots the history mask hides


def plan(vocab: tokens.Vocab, text_ids, sc: SampleConfig, given=None,
         strides=tokens.LUMOS_STRIDES) -> Plan:
  """Builds the cond/uncond template (new frames all MASK) and its layout."""
  given = np.zeros((0, sc.height, sc.width), np.int64) if given is None else np.asarray(given)
  if given.shape[1:] != (sc.height, sc.width):
    raise ValueError(f"given frames are {given.shape[1:]} latents, the request is "
                     f"{sc.height}x{sc.width}")
  block = tokens.frame_block_length(sc.height, sc.width)
  code_slot = tokens.code_slots(sc.height, sc.width)
  frames = np.concatenate([given, np.zeros((sc.frames, sc.height, sc.width), np.int64)])

  def template(text):  # the official layout with the new frames' code slots set to MASK
    ids = tokens.build(text, frames, sc.fps, sc.duration, vocab=vocab, close=False)
    ids[len(ids) - sc.frames * block:].reshape(sc.frames, block)[:, code_slot] = vocab.mask
    return ids

  cond_ids, uncond_ids = template(list(text_ids)), template(None)
  length = -(-len(cond_ids) // LENGTH_BUCKET) * LENGTH_BUCKET
  cond, uncond = (_right_aligned(ids, length, vocab, strides) for ids in (cond_ids, uncond_ids))
  pattern = masking.history_pattern(tokens.content_length(sc.height, sc.width), sc.history_mask)
  return Plan(**{k: np.stack([cond[k], uncond[k]]) for k in cond},
              prefix=length - sc.frames * block, block=block, code_slot=code_slot,
              history_slot=tokens.block_slots(pattern))


def _right_aligned(ids, length: int, vocab: tokens.Vocab, strides) -> dict:
  """One row's ids and layout arrays [length] (`Plan`'s fields), front-padded to `length` with
  `tokens.padding` (nothing attends to it; the row's own positions restart at 0 after it), so the
  padding changes no hidden state."""
  pad = length - len(ids)
  lay = tokens.pack([tokens.padding(pad), tokens.parse(ids, vocab, strides)], length)
  return dict(ids=np.concatenate([np.zeros(pad, ids.dtype), ids]), positions=lay.positions,
              index=lay.index, k_start=lay.k_start, k_end=lay.k_end)


def parse_code_bias(items) -> tuple[tuple[int, float], ...]:
  """["CODE:BIAS", ...] (a command line's --code_bias) -> `SampleConfig.code_bias`; ValueError
  naming the item that is not an integer code and a number."""
  out = []
  for item in items:
    code, sep, bias = str(item).partition(":")
    try:
      out.append((int(code), float(bias)))
    except ValueError:
      raise ValueError(f"--code_bias item {item!r}: expected CODE:BIAS, a visual code index and "
                       "the logit added to it, e.g. 0:-1") from None
    if not sep:
      raise ValueError(f"--code_bias item {item!r}: expected CODE:BIAS, e.g. 0:-1")
  return tuple(out)


def _filter(logits, top_k: int, top_p: float):
  """Top-k / top-p (nucleus) filtering of [..., V] logits."""
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_l = jnp.sort(logits, axis=-1)[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_l, axis=-1), axis=-1)
    cutoff = jnp.take_along_axis(sorted_l, jnp.sum(cum < top_p, axis=-1, keepdims=True), axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def decode_frame(logits_fn, operands, cur, key, tau, *, sc: SampleConfig, code_slot, mask_id: int,
                 visual_offset: int):
  """S masked-decoding steps of one frame block. cur: int [2, block] (both rows equal).

  logits_fn(operands, cur) -> float32 [2, block, visual_size] (row 0 cond, row 1 uncond);
  `operands` (parameters, cache, ...) ride through the loop carry so that NNX modules rebuilt
  from them live in the loop's own trace.
  Returns (finished block [2, block], tau after the frame).
  """
  n_slots = int(np.sum(code_slot))
  code_slot = jnp.asarray(code_slot)

  def step(s, carry):
    cur, key, tau, operands = carry
    key, k_sample, k_gumbel = jax.random.split(key, 3)
    out = logits_fn(operands, cur)
    logits = out[1] + sc.cfg_scale * (out[0] - out[1])  # [block, V]
    if sc.code_limit:
      logits = jnp.where(jnp.arange(logits.shape[-1]) < sc.code_limit, logits, -jnp.inf)
    if sc.code_bias:
      codes, biases = zip(*sc.code_bias)
      logits = logits.at[..., jnp.array(codes)].add(jnp.array(biases, logits.dtype))
    logits = _filter(logits, sc.top_k, sc.top_p)
    sampled = jax.random.categorical(k_sample, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), sampled[:, None], axis=-1)[:, 0]
    unknown = (cur[0] == mask_id) & code_slot
    filled = jnp.where(unknown, sampled + visual_offset, cur[0])
    ratio = (s + 1) / sc.steps
    n_unknown = jnp.sum(unknown)
    m = jnp.floor(n_slots * jnp.cos(jnp.pi / 2 * ratio)).astype(jnp.int32)
    m = jnp.where(s == sc.steps - 1, 0, jnp.clip(m, 1, n_unknown - 1))
    gumbel = jax.random.gumbel(k_gumbel, logp.shape)
    tau_now = tau * (1 - ratio) if sc.temperature_schedule == "cumulative" else (
        sc.temperature * (1 - ratio))
    confidence = jnp.where(unknown, logp + tau_now * gumbel, jnp.inf)
    rank = jnp.argsort(jnp.argsort(confidence))
    remask = unknown & (rank < m)
    new = jnp.where(remask, mask_id, filled)
    tau = tau_now if sc.temperature_schedule == "cumulative" else tau
    return jnp.stack([new, new]), key, tau, operands

  cur, _, tau, _ = jax.lax.fori_loop(0, sc.steps, step, (cur, key, tau, operands))
  return cur, tau


def _visual_logits(model, hidden):
  """float32 [B, n, visual_size] logits of the visual ids only."""
  return jnp.einsum("bld,dv->blv", hidden, model.head_visual[...].astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


# Module-level jitted pieces with hashable static arguments, so compilations are reused across
# `generate` calls: one per (model, request shape), not one per call.
@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill(params, cache, ids, positions, k_start, k_end, *, graphdef):
  return nnx.merge(graphdef, params).extend(cache, ids, positions, k_start, k_end)[1]


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _cached_frame(params, cache, cur, pos, ks, ke, key, tau, *, graphdef, static):
  """Decodes one frame against the cache, then writes it (history-masked) into the cache."""
  kw, history_slot = dict(static[0]), np.array(static[1])

  def logits_fn(operands, c):
    params, cache = operands
    m = nnx.merge(graphdef, params)
    return _visual_logits(m, m.extend(cache, c, pos, ks, ke, write=False)[0])

  done, tau = decode_frame(logits_fn, (params, cache), cur, key, tau, **kw)
  _, cache = nnx.merge(graphdef, params).extend(
      cache, jnp.where(history_slot, kw["mask_id"], done), pos, ks, ke)
  return done, cache, tau


@functools.partial(jax.jit, static_argnames=("graphdef", "static", "b0"))
def _full_frame(params, ids, positions, k_start, k_end, key, tau, *, graphdef, static, b0):
  """Reference: decodes the frame at [b0, end) recomputing the whole sequence every step."""
  kw = dict(static[0])

  def logits_fn(params, c):
    m = nnx.merge(graphdef, params)
    hidden = m(jnp.concatenate([ids[:, :b0], c], axis=1), positions, k_start, k_end)
    return _visual_logits(m, hidden[:, b0:])

  return decode_frame(logits_fn, params, ids[:, b0:], key, tau, **kw)


class Sampler:
  """Generation with a trained decoder. `generate` returns int codes [given + frames, H, W]."""

  def __init__(self, model, vocab: tokens.Vocab, strides=tokens.LUMOS_STRIDES):
    self.graphdef, self.params = nnx.split(model)
    self.cfg, self.vocab, self.strides = model.cfg, vocab, strides

  def generate(self, text_ids, sc: SampleConfig, seed: int = 0, given=None, cached: bool = True,
               progress: bool = False):
    v = self.vocab
    p = plan(v, text_ids, sc, given, self.strides)
    positions = jnp.asarray(rope.rope_positions(p.positions, p.index, self.cfg.rope_variant))
    k_start, k_end = jnp.asarray(p.k_start), jnp.asarray(p.k_end)
    n_given = 0 if given is None else len(given)
    ids = np.array(p.ids)
    first = p.prefix - n_given * p.block  # given frames start here
    for f in range(n_given):  # given frames enter the model history-masked, as in training
      b0 = first + f * p.block
      ids[:, b0:b0 + p.block] = np.where(p.history_slot, v.mask, ids[:, b0:b0 + p.block])
    decode_kw = (("sc", sc), ("code_slot", tuple(p.code_slot.tolist())), ("mask_id", v.mask),
                 ("visual_offset", v.visual_offset))
    static = (decode_kw, tuple(p.history_slot.tolist()))
    key, tau, ids = jax.random.key(seed), jnp.float32(sc.temperature), jnp.asarray(ids)
    if cached:
      cache = nnx.merge(self.graphdef, self.params).init_cache(2, ids.shape[1])
      pre = slice(0, p.prefix)
      cache = _prefill(self.params, cache, ids[:, pre], positions[:, pre], k_start[:, pre],
                       k_end[:, pre], graphdef=self.graphdef)
    out, t0 = [], time.perf_counter()
    for f in range(sc.frames):
      b0 = p.prefix + f * p.block
      sl = slice(b0, b0 + p.block)
      key, k = jax.random.split(key)
      if cached:
        done, cache, tau = _cached_frame(self.params, cache, ids[:, sl], positions[:, sl],
                                         k_start[:, sl], k_end[:, sl], k, tau,
                                         graphdef=self.graphdef, static=static)
      else:
        upto = slice(0, sl.stop)
        done, tau = _full_frame(self.params, ids[:, upto], positions[:, upto], k_start[:, upto],
                                k_end[:, upto], k, tau, graphdef=self.graphdef, static=static,
                                b0=b0)
        ids = ids.at[:, sl].set(jnp.where(np.array(p.history_slot), v.mask, done))
      out.append(done[0])
      if progress:
        jax.block_until_ready(done)
        per = (time.perf_counter() - t0) / (f + 1)
        print(f"frame {f + 1}/{sc.frames} ({sc.steps} steps), {per:.2f} s/frame, "
              f"ETA {per * (sc.frames - f - 1):.0f} s", flush=True)
    codes = tokens.frame_codes(np.asarray(jnp.stack(out)), sc.height, sc.width) - v.visual_offset
    if given is not None:
      codes = np.concatenate([np.asarray(given), codes])
    return codes
