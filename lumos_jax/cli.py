"""The one command-line style of the project's commands: absl flags defined by a function (never at
import), and a command that runs on parsed flag values and the positional arguments.

  def define_flags(fv): flags.DEFINE_...(..., flag_values=fv)
  def command(f, args) -> int: ...
  def main(argv): return cli.run(define_flags, command, "prog", argv)   # tests, notebooks
  if __name__ == "__main__": cli.run_script(define_flags, command)     # python -m ...
"""
from collections.abc import Callable, Sequence

from absl import flags

DefineFlags = Callable[[flags.FlagValues], None]
Command = Callable[[flags.FlagValues, Sequence[str]], int]


def run(define_flags: DefineFlags, command: Command, prog: str, argv: Sequence[str]) -> int:
  """The command in-process: `argv` is what follows the command (no program name), parsed into a
  fresh flags.FlagValues, so it can be called repeatedly. Returns the command's exit code; raises
  flags.Error for a bad flag (unknown, ill-typed, out of bounds, a required one missing)."""
  fv = flags.FlagValues()
  define_flags(fv)
  return command(fv, fv([prog, *argv])[1:])


def run_script(define_flags: DefineFlags, command: Command) -> None:
  """The command as a script: the global FLAGS, absl's usage messages and exit codes."""
  from absl import app  # imported here: absl.app adds flags of its own (pdb, profiling) on import
  define_flags(flags.FLAGS)
  app.run(lambda argv: command(flags.FLAGS, argv[1:]))
