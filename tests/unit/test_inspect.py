"""lumos_jax.inspect: the data behind the notebook's tables and figures, and the notebook's sync
with its percent-format source."""
import importlib.util
import io
import json
import os
import pathlib

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import nbformat
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import REPO, VOCAB, pipeline_config, random_records, random_sample
from lumos_jax import checkpoint, config, inspect, model as model_lib, rope, tokens
from lumos_jax.data import pipeline
from lumos_jax.synthetic import dataset
from lumos_jax.train import checkpointer, optim, state as state_lib


def _dense_restatement(layout):
  """The allowed mask written out query by query from k_start / k_end."""
  out = np.zeros((len(layout), len(layout)), bool)
  for q in range(len(layout)):
    out[q, layout.k_start[q]:layout.k_end[q]] = True
  return out


def test_attention_pattern_is_the_dense_key_ranges():
  rng = np.random.default_rng(0)
  samples = [random_sample(rng) for _ in range(3)]
  packed = tokens.pack([tokens.parse(s, VOCAB) for s in samples], sum(map(len, samples)) + 5)
  for layout in [tokens.parse(samples[0], VOCAB), packed]:
    np.testing.assert_array_equal(inspect.attention_pattern(layout), _dense_restatement(layout))


def test_synthetic_sample_pattern_is_block_causal():
  cfg = config.load("tiny")
  ids, vocab, caption = inspect.synthetic_sample(cfg, index=3)
  assert caption == dataset.generate(cfg.data.synthetic_seed, 3).caption
  layout = tokens.parse(ids, vocab, strides=tuple(cfg.data.strides))
  allowed = inspect.attention_pattern(layout)
  np.testing.assert_array_equal(allowed, _dense_restatement(layout))
  assert layout.frame.max() + 1 == cfg.data.max_frames
  for f in range(cfg.data.max_frames):  # a frame block sees itself whole and all before it
    idx = np.flatnonzero(layout.frame == f)
    assert allowed[idx[0]:idx[-1] + 1, :idx[-1] + 1].all()
    assert not allowed[idx[0]:idx[-1] + 1, idx[-1] + 1:].any()
  text = layout.frame < 0
  np.testing.assert_array_equal(allowed[np.ix_(text, text)],
                                np.tril(np.ones((text.sum(),) * 2, bool)))
  assert inspect.plot_attention(layout, caption).axes[0].images


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_rope_allocation_per_variant(head_dim):
  alloc = inspect.rope_allocation(head_dim)
  assert list(alloc) == list(rope.VARIANTS)
  groups = head_dim // 2 // 16
  np.testing.assert_array_equal(inspect.axis_counts(alloc["mm"]), [[4, 6, 6, 0]] * groups)
  assert (alloc["1d"] == 3).all()
  three = alloc["3d"]  # contiguous: t block, then h, then w, 2:3:3 in total
  assert (np.diff(three) >= 0).all()
  n = head_dim // 2
  np.testing.assert_array_equal(inspect.axis_counts(three).sum(0),
                                [n // 4, (n - n // 4) // 2, n - n // 4 - (n - n // 4) // 2, 0])
  np.testing.assert_array_equal(alloc["mm"], rope.frequency_axes(head_dim, "mm"))
  fig = inspect.plot_rope(head_dim)
  assert len(fig.axes) == 3
  assert fig.axes[2].get_title() == f"mm: t/h/w/1-D = {4 * groups}/{6 * groups}/{6 * groups}/0"


def test_read_metrics_keeps_the_last_line_per_step_and_the_frames(tmp_path):
  lines = [{"step": 0, "eval_loss": 6.0, "eval_loss_frame0": 5.9, "eval_loss_frame1": 6.1},
           {"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0},
           {"step": 2, "loss": 3.5},  # logged again after a restart: this one counts
           {"step": 2, "eval_loss": 3.0, "eval_loss_frame0": 2.9, "eval_loss_frame1": 3.1}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
  train, evals = inspect.read_metrics(tmp_path)
  assert [(r["step"], r["loss"]) for r in train] == [(1, 5.0), (2, 3.5)]
  steps, losses = inspect.per_frame_eval(evals)
  np.testing.assert_array_equal(steps, [0, 2])
  np.testing.assert_array_equal(losses, [[5.9, 6.1], [2.9, 3.1]])
  left, right = inspect.plot_losses(train, evals).axes
  assert len(left.lines) == 2 and len(right.lines) == 2
  np.testing.assert_array_equal(right.lines[1].get_ydata(), [2.9, 3.1])
  _, no_eval = inspect.plot_losses(train, []).axes
  assert not no_eval.lines and "eval_every" in no_eval.texts[0].get_text()


def test_parameter_rows_name_shape_sharding_and_norm():
  mesh = jax.make_mesh((8,), ("fsdp",), devices=jax.devices()[:8])
  w = jax.device_put(jnp.arange(32.0).reshape(8, 4), NamedSharding(mesh, P("fsdp", None)))
  rows = inspect.parameter_rows({"layer": {"w": w, "b": jnp.ones(3, jnp.bfloat16)}})
  by_name = {r["name"]: r for r in rows}
  assert set(by_name) == {"layer/w", "layer/b"}
  row = by_name["layer/w"]
  assert (row["shape"], row["dtype"], row["shard"], row["size"]) == ((8, 4), "float32", (1, 4), 32)
  assert row["sharding"] == "('fsdp', None)"
  assert row["norm"] == pytest.approx(np.linalg.norm(np.arange(32.0)), rel=1e-6)
  assert by_name["layer/b"]["norm"] == pytest.approx(np.sqrt(3))
  text = inspect.table(rows, ["name", "shape", "norm"])
  assert text.splitlines()[0].split() == ["name", "shape", "norm"]
  assert "1.732" in text and "102.1" in text  # 4 significant digits


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with the trainer's checkpoint items of the tiny model at step 3."""
  workdir = tmp_path_factory.mktemp("inspect")
  cfg = config.load("tiny")
  _, params = model_lib.init_model(config.model_config(cfg), 0)
  data = iter(pipeline.build([random_records()], pipeline_config(), VOCAB, process_index=0,
                             process_count=1))
  saver = checkpointer.Checkpointer(checkpoint.directory(workdir))
  saver.save(3, state_lib.init_state(params, optim.make(cfg.optim, cfg.steps), 0), data,
             force=True)
  saver.close()
  return workdir, params


def test_checkpoint_items_and_arrays_without_restoring(workdir):
  path, params = workdir
  rows = inspect.checkpoint_items(path)
  assert [(r["step"], r["item"]) for r in rows] == [(3, "data"), (3, "params"), (3, "train_state")]
  assert all(r["files"] > 0 and r["bytes"] > 0 for r in rows)
  for r in rows:  # sizes on disk (compressed: fresh Adam moments are zeros and take little)
    files = [pathlib.Path(d, f) for d, _, fs in os.walk(path / "checkpoints" / "3" / r["item"])
             for f in fs]
    assert (r["files"], r["bytes"]) == (len(files), sum(f.stat().st_size for f in files))
  arrays = {r["name"]: r for r in inspect.checkpoint_arrays(path)}
  want = {inspect._name(p): x for p, x in jax.tree_util.tree_flatten_with_path(
      jax.tree.map(np.asarray, nnx.to_pure_dict(params)))[0]}
  assert set(arrays) == set(want)
  for name, x in want.items():
    assert (arrays[name]["shape"], arrays[name]["dtype"]) == (x.shape, str(x.dtype)), name
    assert arrays[name]["bytes"] == x.nbytes
  state_arrays = inspect.checkpoint_arrays(path, step=3, item="train_state")
  assert sum(r["bytes"] for r in state_arrays) >= 2 * sum(x.nbytes for x in want.values())
  with pytest.raises(FileNotFoundError, match=r"no item 'params' of step 7 .*steps: \[3\]"):
    inspect.checkpoint_arrays(path, step=7)


def test_frames_figure_and_gif():
  # distinct frames: GIF writers merge identical consecutive ones
  frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), np.uint8)
  fig = inspect.plot_frames(frames, "a caption")
  png = io.BytesIO()
  fig.savefig(png, format="png")  # renders with Agg, no display needed
  assert png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.axes) == 3
  gif = iio.imread(inspect.gif(frames, "a caption", scale=2), extension=".gif")
  assert gif.shape[:3] == (3, 64, 64 + 200)  # the caption column of lumos_jax.synthetic.video


def test_notebook_is_generated_from_its_script():
  spec = importlib.util.spec_from_file_location("notebook_build", REPO / "notebooks" / "build.py")
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  want = build.notebook((REPO / "notebooks" / "inspect_run.py").read_text())
  got = nbformat.read(REPO / "notebooks" / "inspect_run.ipynb", as_version=4)
  nbformat.validate(got)
  assert [(c.cell_type, c.source, c.metadata) for c in got.cells] == [
      (c.cell_type, c.source, c.metadata) for c in want.cells], (
      "notebooks/inspect_run.ipynb is out of date: run python notebooks/build.py")
  assert not any(c.get("outputs") for c in got.cells)
  assert [c.metadata.get("tags") for c in got.cells].count(["parameters"]) == 1


def test_notebook_samples_as_the_demo_script_does():
  """The notebook's sampling settings are launch/demo.sh's (`sampling=(...)`), so its video is
  the one the README's demo scores describe."""
  import ast
  import re
  import shlex
  script = (REPO / "launch" / "demo.sh").read_text()
  flags_given = dict(a[2:].split("=", 1) for a in shlex.split(
      re.search(r"^sampling=\((.*)\)$", script, re.M).group(1)))
  source = ast.parse((REPO / "notebooks" / "inspect_run.py").read_text())
  constants = {t.id: n.value for n in source.body if isinstance(n, ast.Assign)
               for t in n.targets if isinstance(t, ast.Name)}
  assert float(flags_given.pop("guidance")) == ast.literal_eval(constants["GUIDANCE"])
  assert int(flags_given.pop("top_k")) == ast.literal_eval(constants["TOP_K"])
  assert flags_given.pop("code_bias") == ast.literal_eval(constants["CODE_BIAS"])
  steps_default = {c.value for c in ast.walk(constants["SAMPLE_STEPS"])  # LUMOS_SAMPLE_STEPS's
                   if isinstance(c, ast.Constant) and c.value != "LUMOS_SAMPLE_STEPS"}
  assert steps_default == {flags_given.pop("steps")}
  assert not flags_given, f"demo.sh samples with flags the notebook does not set: {flags_given}"
