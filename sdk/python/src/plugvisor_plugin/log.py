"""hclog-style JSON logging for plugins.

go-plugin hosts (and plugvisor) read a plugin's stderr line by line; a line
that is a JSON object with ``@level`` / ``@message`` / ``@timestamp`` is
taken as a structured log record, with its other keys as fields. This module
provides a :class:`logging.Handler` that writes exactly that::

    {"@level":"info","@message":"started","@timestamp":"2026-01-02T03:04:05.678901+00:00","@module":"hello","user":"ada"}

Fields come from ``extra={...}``. Levels map as: below DEBUG -> ``trace``,
DEBUG -> ``debug``, INFO -> ``info``, WARNING -> ``warn``, ERROR and
CRITICAL -> ``error``. The handler writes to file descriptor 2 directly, so
it keeps working while serve() captures ``sys.stderr`` for the stdio stream.
"""

from __future__ import annotations

import datetime
import logging
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Any, Dict, Optional, TextIO, Union

#: A level below DEBUG, shown as "trace" by hclog readers.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVEL_NAMES = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}


def hclog_level(levelno: int) -> str:
    """The hclog name for a logging level number."""
    if levelno < logging.DEBUG:
        return "trace"
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warn"
    return "error"


def parse_level(level: Union[int, str]) -> int:
    """'trace'/'debug'/'info'/'warn'/'error' (any case) or a number."""
    if isinstance(level, bool):
        raise TypeError("level must be a name or an int")
    if isinstance(level, int):
        return level
    try:
        return _LEVEL_NAMES[str(level).strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; use one of trace, debug, info, warn, error"
        ) from None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class HclogHandler(logging.Handler):
    """Writes each record as one hclog JSON line.

    stream: a text stream to write to instead of file descriptor 2 (tests).
    """

    def __init__(self, level: Union[int, str] = logging.NOTSET, stream: Optional[TextIO] = None,
                 fd: int = 2) -> None:
        super().__init__(parse_level(level))
        self._stream = stream
        self._fd = fd
        # Only formatException / formatStack are used.
        self.setFormatter(logging.Formatter())

    def record_to_dict(self, record: logging.LogRecord) -> Dict[str, Any]:
        ts = datetime.datetime.fromtimestamp(record.created).astimezone()
        out: Dict[str, Any] = {
            "@level": hclog_level(record.levelno),
            "@message": record.getMessage(),
            "@timestamp": ts.isoformat(timespec="microseconds"),
            "@module": record.name,
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key.startswith("_") or key in out:
                continue
            out[key] = _jsonable(value)
        fmt = self.formatter or logging.Formatter()
        if record.exc_info:
            out["exception"] = fmt.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = fmt.formatStack(record.stack_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        import json  # not before the first record: a plugin's handshake does not need it

        return json.dumps(
            self.record_to_dict(record), ensure_ascii=False, separators=(",", ":"), default=str
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self._stream is not None:
                self._stream.write(line)
                self._stream.flush()
                return
            data = line.encode("utf-8", "backslashreplace")
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._fd, view)
                except InterruptedError:
                    continue
                view = view[n:]
        except RecursionError:
            raise
        except BrokenPipeError:
            pass  # the host is gone; nobody is left to read it
        except Exception:
            self.handleError(record)


def install(level: Union[int, str] = "info", logger: Optional[logging.Logger] = None) -> HclogHandler:
    """Put an HclogHandler on logger (the root logger by default).

    Sets the logger's level. Calling it twice does not add a second handler.
    """
    target = logger if logger is not None else logging.getLogger()
    lvl = parse_level(level)
    target.setLevel(lvl)
    for h in target.handlers:
        if isinstance(h, HclogHandler):
            return h
    handler = HclogHandler()
    target.addHandler(handler)
    return handler
