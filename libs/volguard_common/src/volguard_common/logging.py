"""Structured logging for every process: JSON lines in services, a readable console for humans.

`configure_logging` installs one handler on the root logger whose formatter is structlog's
`ProcessorFormatter`, so structlog loggers and plain standard-library loggers (FastStream, uvicorn,
asyncpg) come out through the same processors and renderer.

Every line carries:
- `timestamp`: ISO 8601 in **UTC** (`...Z`). Logs are joined with other systems' logs, which speak
  UTC; exchange time (IST) belongs in the event fields (`ts_event`), not in the log clock.
- `level`, `service`, `logger` (the logger name), `event` (the message);
- for exceptions, `exception`: a structured traceback (JSON) without frame locals;
- whatever `bind_message_context` bound for the message being handled (`correlation_id`,
  `event_id`, `stream`), through structlog's contextvars, so it also reaches stdlib log records
  emitted while handling that message.

Secrets are redacted before rendering: pydantic `SecretStr`/`SecretBytes` values anywhere in the
event, values of keys that name a credential (`password`, `token`, `secret`, ...), and the password
part of `scheme://user:password@host` URLs.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TextIO
from uuid import UUID

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]

REDACTED = "**********"

# Loggers that install their own handlers (and stop propagation); configure_logging takes them back
# so their records reach the root handler once, in our format.
THIRD_PARTY_LOGGERS: tuple[str, ...] = ("faststream", "uvicorn", "uvicorn.error", "uvicorn.access")

_SENSITIVE_KEY = re.compile(r"(password|passwd|secret|token|api_key|apikey|authorization|credential)", re.I)
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?P<at>@)", re.I)


# Shorter values are not masked by value: replacing every "abc" in a log would garble it, and the
# key- and URL-based redaction above still covers them where they are named.
MIN_MASKED_SECRET_LENGTH = 4


class _VolguardHandler(logging.StreamHandler[TextIO]):
    """Marks the root handler configure_logging installed, so reconfiguring replaces only it.

    It also masks the configured secrets by value in the rendered line: a token quoted inside an
    exception message or a library's error text has no key to be recognised by.
    """

    def __init__(self, stream: TextIO, secrets: Iterable[str]) -> None:
        super().__init__(stream)
        masked: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_MASKED_SECRET_LENGTH:
                # As written, and as the JSON renderer escapes it.
                masked.update((secret, json.dumps(secret)[1:-1]))
        # Longest first: a secret containing another is masked whole.
        self._secrets = sorted(masked, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


def is_sensitive_name(name: str) -> bool:
    """A setting or field whose name says it holds a credential (password, token, secret, ...)."""
    return _SENSITIVE_KEY.search(name) is not None


def url_password(url: str) -> str | None:
    """The password part of `scheme://user:password@host...`, None when it has none."""
    match = _URL_PASSWORD.search(url)
    return None if match is None else match["password"]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords and the given secret values masked (error messages, summaries)."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<prefix>{REDACTED}\g<at>", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_MASKED_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<prefix>{REDACTED}\g<at>", value) if "://" in value else value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_sensitive(key, item) else _redact(item)
            for key, item in value.items()
        }
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_redact(item) for item in value)
    return value


def _is_sensitive(key: str, value: Any) -> bool:
    # A None under a sensitive name ("token": None, i.e. not configured) is useful and harmless.
    return value is not None and _SENSITIVE_KEY.search(key) is not None


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret values before any renderer sees them."""
    return {
        key: REDACTED if _is_sensitive(key, value) and key != "event" else _redact(value)
        for key, value in event_dict.items()
    }


def _add_service(service: str) -> Processor:
    def add_service(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # structlog's add_logger_name, but keyed `logger` and tolerant of loggers without a name.
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger"] = record.name
    elif (name := getattr(logger, "name", None)) is not None:
        event_dict["logger"] = name
    return event_dict


def _json_default(value: Any) -> Any:
    # Money stays exact in the log (a Decimal through float would print 0.1 as 0.1000000000000000055).
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        # mode="json" renders SecretStr fields masked.
        return value.model_dump(mode="json")
    # numpy scalars: np.int64 is not an int subclass.
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return repr(value)


def configure_logging(
    service: str,
    *,
    fmt: LogFormat = "json",
    level: str = "INFO",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route structlog and standard-library logging through one formatter for `service`.

    `fmt="json"`: one JSON object per line (services, containers). `fmt="console"`: coloured when
    the stream is a terminal. Records go to `stream` (default: stdout at call time). Safe to call
    again: the previous VolGuard handler is replaced, handlers others installed are kept. `secrets`
    (the configured tokens and passwords, `Settings.secret_values()`) are masked wherever they appear
    in a rendered line.
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    output = sys.stdout if stream is None else stream

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_service(service),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]
    # Tracebacks never show frame locals: a local holding a token's secret value or a DSN with its
    # password would otherwise land in the log verbatim, past every redaction above.
    renderer: list[Processor]
    if fmt == "json":
        renderer = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(default=_json_default),
        ]
    elif fmt == "console":
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=output.isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected 'json' or 'console'")

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a module-level logger used before configure_logging ran would otherwise keep
        # the default configuration for the life of the process.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = _VolguardHandler(output, secrets)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _VolguardHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in THIRD_PARTY_LOGGERS:
        adopt_stdlib_logger(name)


def adopt_stdlib_logger(name: str) -> logging.Logger:
    """Strip a library logger's own handlers and let it propagate to the VolGuard root handler.

    FastStream creates its broker logger (`faststream.access.redis`) when the broker starts, after
    configure_logging; pass `RedisBroker(logger=adopt_stdlib_logger("faststream.access.redis"))` so it
    never installs its own handler.
    """
    library_logger = logging.getLogger(name)
    for existing in list(library_logger.handlers):
        library_logger.removeHandler(existing)
    library_logger.propagate = True
    library_logger.setLevel(logging.NOTSET)
    return library_logger


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def bind_message_context(
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
    stream: str | None = None,
    **fields: Any,
) -> Iterator[None]:
    """Bind the message being handled to every log line inside the block, then restore what was bound.

    None values are not bound (and do not hide an outer binding of the same key).
    """
    values = {"correlation_id": correlation_id, "event_id": event_id, "stream": stream, **fields}
    # Tokens rather than structlog's bound_contextvars, which snapshots the whole context on every
    # call (~25 µs of a ~500 µs bus hop, measured in place); resetting them restores exactly what was
    # bound before.
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
