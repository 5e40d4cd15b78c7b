"""notebooks/inspect_run.ipynb runs top to bottom on the shared tiny run and draws every figure.

The kernel is this interpreter: a kernelspec naming sys.executable is written to a temporary
JUPYTER_PATH (nothing is installed globally, nothing is fetched), and the notebook reads its
workdir and sampling steps from the environment its parameter cell looks at.
"""
import json
import os
import shutil
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO

NOTEBOOK = REPO / "notebooks" / "inspect_run.ipynb"
KERNEL = "lumos-jax-test"
FIGURES = 4  # RoPE allocation, attention pattern, losses, generated frames (image/png)


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A kernelspec for this interpreter, found through JUPYTER_PATH; IPython and Jupyter state
  kept under tmp_path; XLA_FLAGS (8 CPU devices, tests/conftest.py) reach the kernel too."""
  spec = tmp_path / "jupyter" / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "lumos_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # the kernel starts in tmp_path: import lumos_jax from this checkout, installed or not
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))


def _outputs(nb, mime):
  return [o for c in nb.cells for o in c.get("outputs", []) if mime in o.get("data", {})]


def test_notebook_runs_and_draws_every_figure(tiny_run, kernel_env, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_run[0], workdir)
  with open(workdir / "metrics.jsonl", "a") as f:  # the tiny run has no eval: add two eval lines
    for step, loss in ((20, 3.0), (40, 2.5)):
      f.write(json.dumps({"step": step, "eval_loss": loss, "eval_loss_frame0": loss + 0.1,
                          "eval_loss_frame1": loss - 0.1}) + "\n")
  monkeypatch.setenv("LUMOS_WORKDIR", str(workdir))
  monkeypatch.setenv("LUMOS_SAMPLE_STEPS", "2")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                          resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute()
  finally:
    nbformat.write(nb, tmp_path / "executed.ipynb")  # for a look after a failure
  assert len(_outputs(nb, "image/png")) == FIGURES
  assert len(_outputs(nb, "image/gif")) == 1
  text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
  for expected in ("train_state", "head_visual", "'fsdp'", "(2, 8, 8)", "CpuDevice(id=7)"):
    assert expected in text, expected
