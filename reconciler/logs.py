"""Logging for the CLI and the daemon: text or JSON lines, with the spec's name on every line
written while that spec is being reconciled (a context variable set by the engine)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

current_spec: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_spec", default=None
)


class _SpecFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.spec = current_spec.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        spec = getattr(record, "spec", None)
        prefix = f"[{spec}] " if spec else ""
        line = f"{record.levelname} {record.name}: {prefix}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "spec": getattr(record, "spec", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_SpecFilter())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # httpx logs every request at INFO; ours are logged at DEBUG by the registry layer.
    # asyncio says which selector it uses at DEBUG: noise for `-v`.
    for noisy in ("httpx", "httpcore", "apscheduler", "watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
