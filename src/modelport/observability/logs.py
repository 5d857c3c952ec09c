"""modelport's log lines: set up in every process (the parent and each `--workers`
worker), as text or JSON (`MODELPORT_LOG_FORMAT=json`), each at most
`MODELPORT_LOG_MAX_LINE_BYTES`, and the one structured line a request gets when it
fails (or every request, with the access log on)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from modelport.observability.requests import RequestRecord

requests_log = logging.getLogger("modelport.requests")

_FIELDS = "modelport_fields"
# Libraries whose INFO lines say nothing an operator needs at every start.
# httpx logs every upstream request at INFO: the request log says what matters.
_QUIET = ("alembic", "alembic.runtime.plugins", "alembic.runtime.migration", "httpx")


# A log line's largest size (MODELPORT_LOG_MAX_LINE_BYTES): a message or field that
# carries what a request sent (a grammar, a template error quoting its source) must not
# write hundreds of times the request's size to the log.
DEFAULT_MAX_LINE_BYTES = 16 * 1024


def cut_to_bytes(text: str, max_bytes: int) -> str:
    """`text` if its UTF-8 fits in `max_bytes`; else its start and a marker saying how
    long it was, `max_bytes` in all (never a character cut in half)."""
    size = len(text.encode())
    if size <= max_bytes:
        return text
    marker = f"...[truncated: {size} bytes, log_max_line_bytes {max_bytes}]"
    keep = max(0, max_bytes - len(marker))
    return text.encode()[:keep].decode(errors="ignore") + marker


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a request's fields.
    A line over `max_line_bytes` has its longest values cut (still one valid object,
    with `"truncated": true`)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        super().__init__()
        self.max_line_bytes = max_line_bytes

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, under --workers N
        }
        entry.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str)
        if len(line) > self.max_line_bytes:
            line = self._shortened(entry, len(line))
        return line.decode()

    def _shortened(self, entry: dict[str, Any], size: int) -> bytes:
        # Cutting n bytes of a value shortens its JSON by n or more (escapes only grow
        # it), so one pass over the values, longest first, is enough.
        texts = {name: str(value) for name, value in entry.items() if not isinstance(value, int | float | bool | None)}
        excess = size - self.max_line_bytes + len(b',"truncated":true')
        for name in sorted(texts, key=lambda name: -len(texts[name])):
            if excess <= 0:
                break
            length = len(texts[name].encode())
            shorter = cut_to_bytes(texts[name], max(0, length - excess))
            if len(shorter.encode()) < length:  # a value shorter than the marker stays whole
                entry[name] = shorter
                excess -= length - len(shorter.encode())
        entry["truncated"] = True
        return orjson.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, with a request's fields appended as key=value; a line over
    `max_line_bytes` is cut, with a marker saying so."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.max_line_bytes = max_line_bytes

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            line += " " + " ".join(f"{name}={_text(value)}" for name, value in fields.items() if value is not None)
        return cut_to_bytes(line, self.max_line_bytes)


def _text(value: object) -> str:
    text = str(value)
    return orjson.dumps(text).decode() if (" " in text or '"' in text or not text) else text


def configure(level: str, log_format: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
    """Send modelport's (and the libraries') log records to stderr in `log_format`, each
    line `max_line_bytes` at most. Idempotent: the parent and each worker call it once; a
    second call changes nothing."""
    root = logging.getLogger()
    if any(getattr(handler, "_modelport", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler()
    formatter = JsonFormatter if log_format.lower() == "json" else TextFormatter
    handler.setFormatter(formatter(max_line_bytes))
    handler._modelport = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(log_format: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> dict[str, Any]:
    """uvicorn's own loggers in the same format as modelport's (each worker applies it)."""
    formatter = f"{__name__}.{'JsonFormatter' if log_format.lower() == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"modelport": {"()": formatter, "max_line_bytes": max_line_bytes}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "modelport"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "propagate": False},
        },
    }


def request_finished(record: RequestRecord, seconds: float, *, access_log: bool) -> None:
    """One line for a request: at WARNING when it failed on the server's or an
    upstream's side (5xx) or was abandoned (499), INFO for the caller's own mistakes
    (4xx), and INFO for every request when the access log is on."""
    status = record.status or 500
    if status >= 500 or status == 499:
        level = logging.WARNING
    elif status >= 400 or access_log:
        level = logging.INFO
    else:
        return
    if not requests_log.isEnabledFor(level):
        return
    fields = {
        "request_id": record.request_id,
        "method": record.method,
        "route": record.route,
        "deployment": record.deployment or None,
        "status": status,
        "latency_ms": round(seconds * 1000, 1),
        "prompt_tokens": record.prompt_tokens if record.deployment else None,
        "completion_tokens": record.completion_tokens if record.deployment else None,
        "reason": record.reason,
        "dropped": ", ".join(record.dropped) or None,
    }
    message = "request failed" if status >= 400 else "request"
    requests_log.log(level, message, extra={_FIELDS: fields})
