"""Logging: the format (text for a terminal, JSON lines for a log pipeline: Loki, Elasticsearch,
Cloud Logging parse one object per line) and the access log, one line per request.

Access lines go to the `dwserve.access` logger (--access-log / DWSERVE_ACCESS_LOG; uvicorn's own
access log stays off: it knows neither the request id nor the depthwise policy). Each says the
method, path, status, time taken, the request id (the X-Request-ID the client got back: the key
from a client's report to the log), the client's address and, on inference routes, the model
and the impl. gRPC calls log alike, their method a gRPC method name. Health probes and metric
scrapes log at DEBUG: one every few seconds per prober would bury the requests.
"""
from __future__ import annotations

import json
import logging
import time

access = logging.getLogger("dwserve.access")
_QUIET_PATHS = frozenset(("/v2/health/live", "/v2/health/ready", "/metrics"))
# Attributes of every LogRecord; anything else on a record came from `extra=` and is a field.
# (uvicorn adds color_message: its message with terminal colour codes)
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the record's
    `extra=` fields (an access line's status, duration_ms, request_id, ...) and, for a logged
    exception, its traceback as one string (a multi-line traceback would split a record)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger's level and format (`dwserve serve`; uvicorn's loggers join it in JSON
    mode, cli.run_server)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_access(method: str, path: str, status: int, seconds: float, request_id: str, client,
               model=None, impl=None) -> None:
    """One access line. `client`: ASGI's (host, port), or a gRPC peer string; None if unknown."""
    level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
    if not access.isEnabledFor(level):
        return
    peer = f"{client[0]}:{client[1]}" if isinstance(client, (tuple, list)) else (client or "-")
    fields = {"method": method, "path": path, "status": status, "duration_ms": round(seconds * 1e3, 3),
              "request_id": request_id, "client": peer}
    if model is not None:
        fields.update(model=model, impl=impl)
    tail = f" model={_printable(str(model))} impl={impl}" if model is not None else ""
    access.log(level, "%s %s %s %d %.1f ms id=%s%s", peer, method, _printable(path), status, seconds * 1e3,
               request_id, tail, extra=fields)


def _printable(text: str) -> str:
    """text for one line of a text log: control characters (a client's percent-encoded CR / LF in a
    path decodes to them) escaped, so no request can forge or split a line. JSON lines escape them."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
