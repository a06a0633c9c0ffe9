"""Structured logging on top of the standard ``logging`` module.

Loggers are module loggers (``logging.getLogger(__name__)``). Structured fields travel in
``extra`` (for example ``extra={"pod": "ns/name", "node": "n1"}``) and are rendered as
``key=value`` pairs in text mode or as keys of one JSON object per line in JSON mode.
"""

import logging
import sys
import time
from typing import Any, ClassVar

import orjson

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{timestamp}Z {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    reserved: ClassVar[tuple[str, ...]] = ("time", "level", "logger", "message")

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            document[key if key not in self.reserved else f"field_{key}"] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure(level: str = "INFO", json_format: bool = False) -> None:
    """Send every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Kubernetes clients log every request at DEBUG; keep them at WARNING.
    for noisy in ("kubernetes", "kubernetes_asyncio", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
