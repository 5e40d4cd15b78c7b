"""A data-only unpickler for the official Lumos `.pkl` records.

The official pre-tokenized samples are pickled plain dicts of lists of ints. `pickle.load` would run
whatever a pickle names; this loader refuses every global (class or function), so a malicious file
can at worst fail to load. Only builtin containers and scalars can come out of it.
"""
import io
import pickle


class _DataOnlyUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    raise pickle.UnpicklingError(
        f"refusing to load global {module}.{name}: only plain data (dict/list/int/str/...) "
        "is accepted in Lumos records")


def loads(data: bytes):
  """Unpickles `data`, refusing every class or function reference."""
  return _DataOnlyUnpickler(io.BytesIO(data)).load()


def load(path):
  """Reads the pickle file at `path` with the data-only unpickler."""
  with open(path, "rb") as f:
    return _DataOnlyUnpickler(f).load()
