"""Writes to the job's log, which the host keeps with the job. `print()` goes there too."""

from wit_world.imports import log as wit_log
from wit_world.imports.log import Level


def trace(message: object) -> None:
    """Logs very detailed tracing."""
    wit_log.write(Level.TRACE, str(message))


def debug(message: object) -> None:
    """Logs detail useful while debugging."""
    wit_log.write(Level.DEBUG, str(message))


def info(message: object) -> None:
    """Logs normal operation."""
    wit_log.write(Level.INFO, str(message))


def warn(message: object) -> None:
    """Logs something unexpected that the task handled."""
    wit_log.write(Level.WARN, str(message))


def error(message: object) -> None:
    """Logs a failure."""
    wit_log.write(Level.ERROR, str(message))
