"""Logging set-up: structlog, JSON lines in production, a console renderer on a TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def setup(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog once; stdlib records (paho, aiohttp) render the same way.

    Tracebacks never carry local variables (structlog's default shows them, and a
    handler's locals hold the verifier token, the client secret, the Basic header), and
    every rendered line is scrubbed of the given secret values as a second guard.
    """
    json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback
        )
    renderer = _Scrubbed(renderer, secrets)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # third-party libraries: warnings and up


class _Scrubbed:
    """A renderer whose output never contains one of the secrets, whatever was logged."""

    def __init__(self, renderer: Any, secrets: Iterable[str]) -> None:
        self._renderer = renderer
        # short values would blank out ordinary words; real secrets are long
        self._secrets = sorted(
            {s for s in secrets if len(s) >= 8}, key=len, reverse=True
        )

    def __call__(self, logger: Any, name: str, event: Any) -> str:
        line = str(self._renderer(logger, name, event))
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, "[secret]")
        return line


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()
