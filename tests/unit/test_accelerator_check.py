"""benchmarks/accelerator.py --smoke on the CPU: every section runs, nothing errors, and every
attention implementation available here agrees with float32 dense attention."""
import json
import math
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "accelerator.py"
SECTIONS = ("versions", "throughput", "attention", "cache_attention", "train_parts", "train_step",
            "sampling")


def _run_smoke(out: pathlib.Path) -> dict:
  # One CPU device (not the 8 forced ones of conftest), and XLA's CPU backend at -O0: compiling
  # dominates the smoke run, and the numerics do not depend on it.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", f"--out={out}"], env=env,
                        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1])
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  assert f"wrote {out}" in proc.stdout
  return json.loads(out.read_text())


def test_smoke_writes_every_section_without_errors(tmp_path):
  result = _run_smoke(tmp_path / "accelerator.json")
  assert result["mode"] == "smoke"
  assert result["errors"] == []
  for name in SECTIONS:
    assert name in result and result[name].get("status") != "error", name
  assert result["versions"]["backend"] == "cpu"
  assert result["throughput"]["matmul"]["tflops"] > 0
  assert result["throughput"]["copy"]["gb_per_s"] > 0

  for section in ("attention", "cache_attention"):
    impls = result[section]["impls"]
    assert impls["dense"]["status"] == "ok"
    ran = [n for n, r in impls.items() if r["status"] == "ok"]
    assert {"dense", "xla", "xla_scan"} <= set(ran) or section == "cache_attention", ran
    for name, r in impls.items():
      assert r["status"] in ("ok", "skipped"), (section, name, r)
      assert r["executed_pairs"] >= r["allowed_pairs"] > 0, (section, name, r)
      if r["status"] == "skipped":
        assert r["reason"], (section, name)
        continue
      assert r["finite"], (section, name)
      assert r["max_abs_err"] < 1e-4, (section, name, r["max_abs_err"])
      times = [r["fwd_ms"]] + ([r["fwd_bwd_ms"]] if section == "attention" else [])
      assert all(math.isfinite(t) and t > 0 for t in times), (section, name, r)

  for section in ("train_step", "sampling"):
    runs = result[section]["runs"]
    assert runs["baseline"]["status"] == "ok" and runs["baseline"]["model.attention"] == "xla_scan"
    for r in runs.values():
      assert r["status"] in ("ok", "skipped"), (section, r)
  for r in result["train_step"]["runs"].values():
    if r["status"] == "ok":
      assert r["tokens_per_s"] > 0 and r["mfu_vs_reference"] > 0
  parts = result["train_parts"]
  for name in ("loss_grad", "embedding_grad", "optimizer_update"):
    assert math.isfinite(parts[name]["ms"]) and parts[name]["ms"] > 0, (name, parts[name])
  assert parts["optimizer_update"]["parameters"] > 0
  for r in result["sampling"]["runs"].values():
    if r["status"] == "ok":
      assert r["s_per_frame"] > 0 and r["frames"] == 2 and r["steps"] == 2
