"""Looking inside a training run: the helpers behind notebooks/inspect_run.ipynb.

Each helper returns data (lists of row dicts, numpy arrays) and/or a matplotlib `Figure`; the
notebook only calls them and displays the result. Figures are built with `matplotlib.figure.Figure`
directly, never through pyplot: nothing is registered with a GUI backend, a Jupyter front end
shows them inline, and `fig.savefig` renders them with Agg where there is no display.

Like sampling, this module reads parameters through `lumos_jax.checkpoint` and never imports
`lumos_jax.train` (inference stands apart from training):

  rows = inspect.checkpoint_items(workdir)        # steps, items, sizes on disk; nothing restored
  arrays = inspect.checkpoint_arrays(workdir)     # shapes/dtypes from orbax metadata alone
  sampler, cfg, vocab = inspect.load(workdir)     # parameters only, over every device
  print(inspect.table(inspect.parameter_rows(sampler.params)))
"""
from __future__ import annotations

import json

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from etils import epath
from flax import nnx
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lumos_jax import checkpoint, config as config_lib, rope, tokens
from lumos_jax.sample import __main__ as sample_cli, loader
from lumos_jax.synthetic import dataset, video

AXIS_NAMES = ("t", "h", "w")
AXIS_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:gray")  # t, h, w, 1-D (p, p, p)
META_GROUP = 16  # MM-RoPE assigns frequencies in meta-groups of 16 (rope.py)


# ---- the run on disk, read without restoring anything ----

def _tree_bytes(path: epath.Path) -> tuple[int, int]:
  """(files, bytes) under a directory (walked, not globbed: epath refuses `**` on object stores)."""
  files = [top / name for top, _, names in path.walk() for name in names]
  return len(files), sum(p.stat().length for p in files)


def checkpoint_items(workdir) -> list[dict]:
  """One row per (finished step, item) of WORKDIR/checkpoints: {"step", "item", "files", "bytes"}.

  Items are the directories of a step (`params`, `train_state`, `data`; see
  lumos_jax.checkpoint); a checkpoint copied without some of them lists only what is there.
  """
  root = epath.Path(checkpoint.directory(workdir))
  rows = []
  for step in checkpoint.steps(workdir):
    for item in sorted(p for p in (root / str(step)).iterdir() if p.is_dir()):
      files, size = _tree_bytes(item)
      rows.append({"step": step, "item": item.name, "files": files, "bytes": size})
  return rows


def _name(path) -> str:
  """'blocks/attn/wq' from a jax key path (dict keys, attributes, sequence indices)."""
  parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
  return "/".join(str(p) for p in parts)


def checkpoint_arrays(workdir, step: int | None = None, item: str = checkpoint.PARAMS
                      ) -> list[dict]:
  """{"name", "shape", "dtype", "bytes"} per array of one saved item, from orbax's metadata
  (no array is read). step: None for the latest; item: `params` or `train_state`. Names are those
  of `parameter_rows` (the `value` key under which an nnx Variable is saved is left out); bytes
  are the array's in memory, not on disk (orbax compresses).

  Raises FileNotFoundError when the step or item is not on disk.
  """
  available = checkpoint.steps(workdir)
  step = available[-1] if step is None and available else step
  path = epath.Path(checkpoint.directory(workdir)) / str(step) / item
  if step not in available or not path.is_dir():
    raise FileNotFoundError(f"no item {item!r} of step {step} in {checkpoint.directory(workdir)} "
                            f"(finished steps: {available or 'none'})")
  handler = ocp.StandardCheckpointHandler()  # the item's handler: no step-level metadata to miss
  try:
    tree = handler.metadata(path).tree
  finally:
    handler.close()
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  rows = []
  for path_, meta in leaves:
    shape, dtype = tuple(meta.shape), np.dtype(meta.dtype)
    rows.append({"name": _name(path_).removesuffix("/value"), "shape": shape, "dtype": str(dtype),
                 "bytes": int(np.prod(shape)) * dtype.itemsize})
  return rows


# ---- the parameters, restored alone ----

def load(workdir, step: int | None = None, devices=None):
  """(Sampler, config, vocabulary) of a run with only its parameters restored (as
  `lumos_jax.sample.load`), sharded over `devices` (default: every device there is)."""
  return loader.load(workdir, step, devices=jax.devices() if devices is None else devices)


@jax.jit
def _norm(x):
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def parameter_rows(params) -> list[dict]:
  """{"name", "shape", "dtype", "sharding", "shard", "size", "norm"} per parameter array.

  params: an `nnx.State` (e.g. `Sampler.params`) or a nested dict of jax arrays. "sharding" is
  the PartitionSpec of a NamedSharding (or the sharding's repr), "shard" the per-device shape,
  "norm" the L2 norm over all elements (computed where the array lives).
  """
  tree = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
  rows = []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    sh = x.sharding
    rows.append({"name": _name(path), "shape": tuple(x.shape), "dtype": str(x.dtype),
                 "sharding": str(tuple(sh.spec)) if hasattr(sh, "spec") else str(sh),
                 "shard": tuple(x.sharding.shard_shape(x.shape)), "size": int(x.size),
                 "norm": float(_norm(x))})
  return rows


def table(rows: list[dict], columns: list[str] | None = None) -> str:
  """Rows of dicts as a left-aligned text table (floats with 4 significant digits)."""
  columns = columns or (list(rows[0]) if rows else [])
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  cells = [columns] + [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


# ---- MM-RoPE: which position axis drives each frequency ----

def rope_allocation(head_dim: int) -> dict[str, np.ndarray]:
  """variant -> int [head_dim // 2]: the axis (0 t, 1 h, 2 w) of each frequency, for every variant
  rope.py knows; `1d` frequencies are marked 3 (they all read the 1-D position p)."""
  out = {v: rope.frequency_axes(head_dim, v) for v in rope.VARIANTS}
  out["1d"] = np.full_like(out["1d"], 3)
  return out


def axis_counts(axes: np.ndarray, group: int = META_GROUP) -> np.ndarray:
  """int [n_groups, 4]: how many frequencies of each group of `group` go to t, h, w, 1-D."""
  axes = np.asarray(axes).reshape(-1, group)
  return np.stack([(axes == a).sum(axis=1) for a in range(4)], axis=1)


def plot_rope(head_dim: int, theta: float = 10000.0) -> Figure:
  """The frequency -> axis allocation of 1d / 3d / mm side by side: each panel one row per
  meta-group of 16 frequencies (highest frequency top left), coloured by axis."""
  alloc = rope_allocation(head_dim)
  wavelengths = 2 * np.pi / rope.inv_frequencies(head_dim, theta)
  groups = head_dim // 2 // META_GROUP
  fig = Figure(figsize=(12, 1.2 + 0.45 * groups), layout="constrained")
  axes = fig.subplots(1, len(alloc), sharey=True)
  for ax, (variant, a) in zip(axes, alloc.items()):
    ax.imshow(a.reshape(groups, META_GROUP), cmap=ListedColormap(AXIS_COLOURS), vmin=0, vmax=3,
              aspect="auto")
    counts = axis_counts(a).sum(axis=0)
    ax.set_title(f"{variant}: t/h/w/1-D = {'/'.join(map(str, counts))}")
    ax.set_xlabel("frequency within meta-group")
    ax.set_xticks(range(0, META_GROUP, 4))
  axes[0].set_ylabel("meta-group")
  axes[0].set_yticks(range(groups))
  fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(AXIS_COLOURS, (*AXIS_NAMES, "1-D"))],
             loc="outside right upper")
  fig.suptitle(f"head_dim {head_dim}: wavelengths {wavelengths[0]:.3g} .. {wavelengths[-1]:.3g} "
               "positions, left to right then down")
  return fig


# ---- block-causal attention of a sample ----

def synthetic_sample(cfg, index: int = 0) -> tuple[np.ndarray, tokens.Vocab, str]:
  """(token ids int32 [L], vocabulary, caption) of embedded-dataset sample `index` with the run's
  frame count and vocabulary (the compact one when the run's has no byte-level text)."""
  vocab = config_lib.vocab(cfg)
  vocab = vocab if vocab.byte_text_offset is not None else tokens.Vocab.compact()
  syn = dataset.config_of_run(cfg)
  sample = dataset.generate(cfg.data.get("synthetic_seed", 0), index, syn)
  return dataset.to_tokens(sample, dataset.PatchTokenizer(syn), vocab), vocab, sample.caption


def attention_pattern(layout: tokens.Layout) -> np.ndarray:
  """bool [L, L]: query q (row) may attend key k (column), i.e. k_start[q] <= k < k_end[q]."""
  k = np.arange(len(layout))
  return (k >= layout.k_start[:, None]) & (k < layout.k_end[:, None])


def plot_attention(layout: tokens.Layout, title: str = "") -> Figure:
  """The allowed (query, key) pairs of a layout as an image, frame blocks outlined."""
  allowed = attention_pattern(layout)
  n = len(layout)
  fig = Figure(figsize=(6.5, 6), layout="constrained")
  ax = fig.subplots()
  ax.imshow(allowed, cmap="Greys", interpolation="nearest")
  for f in range(int(layout.frame.max(initial=-1)) + 1):
    idx = np.flatnonzero(layout.frame == f)
    lo, hi = idx[0] - 0.5, idx[-1] + 0.5
    ax.plot([lo, hi, hi, lo, lo], [lo, lo, hi, hi, lo], color="tab:orange", lw=0.8)
  ax.set_xlabel("key")
  ax.set_ylabel("query")
  ax.set_title(f"{title}\n{n} tokens, {int(allowed.sum())} allowed pairs "
               f"({allowed.sum() / (n * (n + 1) / 2):.3f} of causal); frames outlined")
  return fig


# ---- metrics.jsonl ----

def read_metrics(workdir) -> tuple[list[dict], list[dict]]:
  """(training rows, eval rows) of WORKDIR/metrics.jsonl, each sorted by step; a step logged again
  after a restart replaces the first. Eval rows hold eval_loss and eval_loss_frame{i}."""
  train, evals = {}, {}
  for line in (epath.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    if not line.strip():
      continue
    row = json.loads(line)
    if "loss" in row:
      train[row["step"]] = row
    if "eval_loss" in row:
      evals[row["step"]] = row
  return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def per_frame_eval(evals: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """(steps int [E], losses float [E, F]) of the eval rows' eval_loss_frame{i} (NaN: missing)."""
  n = max((int(k[len("eval_loss_frame"):]) + 1 for r in evals for k in r
           if k.startswith("eval_loss_frame")), default=0)
  losses = np.array([[r.get(f"eval_loss_frame{i}", np.nan) for i in range(n)] for r in evals],
                    float).reshape(len(evals), n)
  return np.array([r["step"] for r in evals], int), losses


def plot_losses(train: list[dict], evals: list[dict]) -> Figure:
  """Left: training loss (and eval loss) per step; right: eval loss per frame, one line per eval
  step (dark early, bright late), or a note where the run logged no eval."""
  fig = Figure(figsize=(12, 4), layout="constrained")
  left, right = fig.subplots(1, 2)
  left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
  if evals:
    left.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
  left.set(xlabel="step", ylabel="loss (masked visual tokens)", yscale="log")
  left.legend()
  steps, losses = per_frame_eval(evals)
  if losses.size:
    colours = np.linspace(0.1, 0.9, len(steps))
    for step, row, c in zip(steps, losses, colours):
      right.plot(np.arange(len(row)), row, "o-", color=(0.2, c, 0.6), label=f"step {step}")
    right.set(xlabel="frame", ylabel="eval loss", xticks=range(losses.shape[1]), yscale="log")
    right.legend(fontsize="small", ncols=2)
  else:
    right.text(0.5, 0.5, "no eval lines in metrics.jsonl\n(train with --config.eval_every=N)",
               ha="center", va="center", transform=right.transAxes)
    right.set_axis_off()
  right.set_title("per-frame eval loss")
  return fig


# ---- a generated sample ----

def sample_video(loaded, prompt: str, *, steps: int = 16, guidance: float = 3.0, top_k: int = 0,
                 code_bias: str = "", seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
  """(codes int [T, H, W], frames uint8 [T, H', W', 3] or None) of one text-to-video sample.

  loaded: `load(...)`'s (sampler, cfg, vocab). The request is the one `python -m lumos_jax.sample
  --prompt=... --steps=... --guidance=... --top_k=... --code_bias=...` builds (code_bias as the
  command takes it, "CODE:BIAS,..."; every other setting at the command's default); frames are
  decoded for runs on the embedded dataset (None otherwise).
  """
  sampler, cfg, vocab = loaded
  fv = flags.FlagValues()
  sample_cli.define_flags(fv)
  fv(["inspect", "--workdir=.", f"--prompt={prompt}", f"--steps={steps}",
      f"--guidance={guidance}", f"--top_k={top_k}", f"--code_bias={code_bias}"])
  text, sc, given = sample_cli.request(fv, cfg, vocab)
  codes = sampler.generate(text, sc, seed=seed, given=given)
  frames = (loader.synthetic_tokenizer(cfg).decode(codes) if cfg.data.kind == "synthetic"
            else None)
  return codes, frames


def plot_frames(frames: np.ndarray, caption: str = "") -> Figure:
  """uint8 [T, H, W, 3] frames in a row (a still of a video)."""
  fig = Figure(figsize=(1.6 * len(frames), 2), layout="constrained")
  for t, ax in enumerate(np.atleast_1d(fig.subplots(1, len(frames)))):
    ax.imshow(frames[t], interpolation="nearest")
    ax.set_title(f"frame {t}", fontsize="small")
    ax.set_axis_off()
  fig.suptitle(caption)
  return fig


def gif(frames: np.ndarray, caption: str, fps: int = 4, scale: int = 4) -> bytes:
  """A looping animated GIF (bytes) of uint8 [T, H, W, 3] frames, upscaled, caption beside them
  (as the sample command writes it)."""
  return iio.imwrite("<bytes>", video.captioned(frames, caption, scale), extension=".gif",
                     duration=1000 / fps, loop=0)
