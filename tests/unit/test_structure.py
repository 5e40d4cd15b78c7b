"""The package's shape: declared dependencies cover its imports, inference stands apart from
training, no import cycle, short files, ruff clean."""
import ast
import os
import subprocess
import sys
import tomllib

import pytest

from helpers import REPO

PACKAGE = REPO / "lumos_jax"
# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "PIL": "pillow", "ml_collections": "ml-collections",
                "orbax": "orbax-checkpoint", "tensorflow_datasets": "tensorflow-datasets",
                "absl": "absl-py", "array_record": "array-record", "tensorboardX": "tensorboardx"}
MAX_LINES = 400


def _modules() -> dict[str, ast.Module]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    out[name] = ast.parse(path.read_text())
  return out


def _imports(tree: ast.Module) -> set[str]:
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    elif isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
  return names


def test_declared_dependencies_cover_every_import():
  meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  declared = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower()
              for d in meta["dependencies"]}
  stdlib = set(sys.stdlib_module_names)
  missing = set()
  for name, tree in _modules().items():
    for imported in _imports(tree):
      top = imported.split(".")[0]
      if top in stdlib or top == "lumos_jax":
        continue
      if DISTRIBUTION.get(top, top).lower().replace("_", "-") not in {
          d.replace("_", "-") for d in declared}:
        missing.add(f"{top} (imported by {name})")
  assert not missing, f"imported but not in pyproject.toml dependencies: {sorted(missing)}"


def test_no_import_cycle():
  modules = _modules()
  graph = {m: {x for x in _imports(t) if x in modules and x != m and not m.startswith(x + ".")}
           for m, t in modules.items()}

  def cycle_from(start):
    stack, seen = [(start, [start])], set()
    while stack:
      node, path = stack.pop()
      for nxt in graph[node]:
        if nxt == start:
          return path + [start]
        if nxt not in seen:
          seen.add(nxt)
          stack.append((nxt, path + [nxt]))
    return None

  cycles = [c for c in map(cycle_from, graph) if c]
  assert not cycles, " -> ".join(cycles[0])


def _reachable(modules: dict, start: list[str]) -> set[str]:
  """Modules of the package that importing `start` can load: every import statement counts,
  function-level ones included, and importing a module loads its parent packages."""
  seen, todo = set(), list(start)
  while todo:
    name = todo.pop()
    if name in seen or name not in modules:
      continue
    seen.add(name)
    parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
    todo += [x for x in _imports(modules[name]) if x in modules] + parents
  return seen


def test_inference_imports_no_training_code():
  """No import statement anywhere behind the sampler, the evaluation or the notebook API reaches
  lumos_jax.train, and importing them loads none; no module outside lumos_jax/train imports
  optax. (flax.nnx itself imports optax: its `nnx.Optimizer` is part of `import flax.nnx` in flax
  0.12.10, so optax in sys.modules says nothing about our code.)"""
  modules = _modules()
  inference = [m for m in modules if m.startswith("lumos_jax.sample")] + [
      "lumos_jax.synthetic.evaluate", "lumos_jax.checkpoint", "lumos_jax.inspect"]
  training = sorted(m for m in _reachable(modules, inference) if m.startswith("lumos_jax.train"))
  assert not training, f"reachable from the inference modules: {training}"
  code = ("import sys, lumos_jax.sample, lumos_jax.sample.__main__, lumos_jax.synthetic.evaluate,"
          " lumos_jax.inspect;"
          "print([m for m in sys.modules if m.startswith('lumos_jax.train')])")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.stdout.strip() == "[]", out.stdout
  offenders = [m for m, t in modules.items()
               if not m.startswith("lumos_jax.train")
               and any(x.split(".")[0] == "optax" for x in _imports(t))]
  assert not offenders, f"optax imported outside lumos_jax.train: {offenders}"


def test_importing_the_package_starts_no_jax_backend():
  """jax.distributed.initialize() must run before any backend exists: a module that asks
  jax.default_backend() (or jax.devices()) at import time breaks every multi-process run."""
  modules = sorted(m for m in _modules() if not m.endswith("__main__") or m.startswith(
      ("lumos_jax.train", "lumos_jax.sample", "lumos_jax.convert")))
  code = (f"import importlib; [importlib.import_module(m) for m in {modules!r}];"
          "import jax._src.xla_bridge as xb; print(sorted(xb._backends))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.stdout.strip() == "[]", out.stdout


def test_files_are_short_or_say_why():
  long = []
  for path in PACKAGE.rglob("*.py"):
    text = path.read_text()
    doc = ast.get_docstring(ast.parse(text)) or ""
    if text.count("\n") > MAX_LINES and "longer than 400 lines because" not in doc:
      long.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
  assert not long, f"over {MAX_LINES} lines without a reason at the top: {long}"


def test_ruff_clean():
  try:
    import ruff  # noqa: F401
  except ImportError:
    pytest.skip("ruff is not installed (requirements.txt pins it)")
  out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stdout[-4000:]
