"""Writes notebooks/NAME.ipynb from notebooks/NAME.py, its diffable source ("percent" format).

  python notebooks/build.py                 # every notebooks/*.py except this file
  python notebooks/build.py inspect_run     # one

Edit the .py and run this: the .ipynb is generated (no outputs) and a test checks the two agree.
The format is the one jupytext pairs: `# %%` opens a code cell (optionally followed by cell
metadata such as `tags=["parameters"]`), `# %% [markdown]` a markdown cell whose lines are
commented with `# `; a commented magic `# %matplotlib inline` in a code cell is the magic itself.
Lines before the first `# %%` are the file's own header and are left out.
"""
import json
import pathlib
import re
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
_CELL = re.compile(r"^# %%( \[markdown\])?(?: (.*))?$")
_MAGIC = re.compile(r"^# (%[a-z].*)$")


def _metadata(text: str | None) -> dict:
  """`tags=["parameters"]` -> {"tags": ["parameters"]} (key=JSON pairs, space separated)."""
  out = {}
  for pair in re.findall(r'(\w+)=(\[[^\]]*\]|"[^"]*"|\S+)', text or ""):
    out[pair[0]] = json.loads(pair[1])
  return out


def _source(lines: list[str], markdown: bool) -> str:
  if markdown:
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
  else:
    lines = [_MAGIC.sub(r"\1", line) for line in lines]
  return "\n".join(lines).strip("\n")


def notebook(script: str) -> nbformat.NotebookNode:
  """The notebook (nbformat 4, no outputs) of a percent-format script's text."""
  cells, current = [], None
  for line in script.splitlines():
    m = _CELL.match(line)
    if m:
      current = (bool(m[1]), _metadata(m[2]), [])
      cells.append(current)
    elif current is not None:
      current[2].append(line)
  nb = nbformat.v4.new_notebook()
  nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"},
                 "language_info": {"name": "python"}}
  for markdown, meta, lines in cells:
    make = nbformat.v4.new_markdown_cell if markdown else nbformat.v4.new_code_cell
    nb.cells.append(make(_source(lines, markdown), metadata=meta))
  for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
    cell.id = f"cell-{i}"
  return nb


def build(name: str) -> pathlib.Path:
  """Writes notebooks/NAME.ipynb from notebooks/NAME.py; returns its path."""
  out = HERE / f"{name}.ipynb"
  nb = notebook((HERE / f"{name}.py").read_text())
  nbformat.validate(nb)
  out.write_text(nbformat.writes(nb) + "\n")
  return out


if __name__ == "__main__":
  names = sys.argv[1:] or [p.stem for p in sorted(HERE.glob("*.py")) if p.name != "build.py"]
  for name in names:
    print(f"wrote {build(name)}")
