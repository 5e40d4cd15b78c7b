"""`pip install .` alone (no requirements.txt) gives a package whose every module imports: the
dependencies declared in pyproject.toml are the true ones. Takes minutes and a package index:
`-m slow`."""
import subprocess
import sys

import pytest

from helpers import REPO

IMPORT_ALL = """
import importlib, pathlib, sys
import lumos_jax
root = pathlib.Path(lumos_jax.__file__).parent
names = sorted('.'.join(p.relative_to(root.parent).with_suffix('').parts).removesuffix('.__init__')
               for p in root.rglob('*.py'))
for name in names:
  importlib.import_module(name)
print(len(names), 'modules imported')
"""


@pytest.mark.slow
def test_pip_install_alone_imports_every_module(tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
  subprocess.run([venv / "bin" / "pip", "install", "-q", str(REPO)], check=True, timeout=1800)
  out = subprocess.run([venv / "bin" / "python", "-c", IMPORT_ALL], cwd=tmp_path, check=True,
                       timeout=300, capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu"})
  assert "modules imported" in out.stdout, out.stderr[-3000:]
