"""Errors the CLI reports as one line and exit code 2 (bad input), never as a traceback."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error `bench` reports to the user as a single line."""

    exit_code = 2


class InputError(BenchError):
    """Bad input data: a corrupt image, a mask of the wrong size or values, a broken file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(BenchError):
    """A bad command-line value, method spec, dataset file or plugin parameter."""


class NotRunnableError(ConfigError):
    """A stage that cannot run as configured for want of something only the user can supply
    (a checkpoint with no default). ``reason`` is the short form a leaderboard shows ("needs a
    SAM checkpoint (checkpoint=PATH)"); the message adds what to pass and where to get it. A
    run that selected the stage by a wildcard records it as not run; a named one fails."""

    def __init__(self, reason: str, hint: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {hint}")


class UnknownNameError(ConfigError):
    """A name that no registry knows; the message lists close matches and the choices."""


class PluginError(BenchError):
    """An exception inside a plugin (or its file's import), reported as one line naming the
    plugin, its stage and the data set; ``--debug`` / ``BENCH_DEBUG=1`` shows the traceback."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (first line of the message, stripped)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
