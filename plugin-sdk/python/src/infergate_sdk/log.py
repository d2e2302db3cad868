"""Logging to the gateway's log, tagged with the model (and the request id).

    from infergate_sdk import log
    log.info(f"k={k}")

`log.handler()` is a `logging.Handler` for code that uses the standard `logging` module.
Outside a component (unit tests) lines go to stderr.
"""

from __future__ import annotations

import logging
import sys

from . import _wit

__all__ = ["trace", "debug", "info", "warn", "warning", "error", "handler"]


def _write(level: str, message: str) -> None:
    if _wit.host is not None:
        _wit.host.log(_wit.host.Level[level], str(message))
    else:
        print(f"[{level.lower()}] {message}", file=sys.stderr)


def trace(message: str) -> None:
    _write("TRACE", message)


def debug(message: str) -> None:
    _write("DEBUG", message)


def info(message: str) -> None:
    _write("INFO", message)


def warn(message: str) -> None:
    _write("WARN", message)


warning = warn


def error(message: str) -> None:
    _write("ERROR", message)


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            level = "ERROR"
        elif record.levelno >= logging.WARNING:
            level = "WARN"
        elif record.levelno >= logging.INFO:
            level = "INFO"
        else:
            level = "DEBUG"
        _write(level, self.format(record))


def handler() -> logging.Handler:
    """A handler forwarding `logging` records: `logging.getLogger().addHandler(log.handler())`."""
    return _Handler()
