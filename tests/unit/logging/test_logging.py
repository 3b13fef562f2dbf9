"""volguard_common.logging: JSON structure, message context, stdlib routing, secret redaction.

Assertions are on structured keys and values, never on message wording.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from volguard_common import logging as vg_logging


@pytest.fixture(autouse=True)
def restore_logging_state() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back so other tests see what they expect."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    library = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in (*vg_logging.THIRD_PARTY_LOGGERS, "faststream.access.redis")
    }
    yield
    structlog.configure(**structlog_config)
    root.handlers[:] = root_handlers
    root.setLevel(root_level)
    for name, (handlers, propagate, level) in library.items():
        library_logger = logging.getLogger(name)
        library_logger.handlers[:] = handlers
        library_logger.propagate = propagate
        library_logger.setLevel(level)
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    vg_logging.configure_logging("risk", fmt="json", level=level, stream=stream)
    return stream


def test_json_line_has_timestamp_level_service_logger_and_fields() -> None:
    stream = configured()
    before = datetime.now(UTC)

    vg_logging.get_logger("volguard.risk.limits").info("limit_checked", vega=812.5, lots=4)

    (line,) = json_lines(stream)
    assert line["level"] == "info"
    assert line["service"] == "risk"
    assert line["logger"] == "volguard.risk.limits"
    assert line["event"] == "limit_checked"
    assert (line["vega"], line["lots"]) == (812.5, 4)
    assert line["timestamp"].endswith("Z")  # UTC
    stamped = datetime.fromisoformat(line["timestamp"])
    assert stamped.utcoffset() is not None
    assert stamped.utcoffset().total_seconds() == 0
    assert before <= stamped <= datetime.now(UTC)


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    vg_logging.configure_logging("strategy", fmt="json", level="INFO")

    structlog.get_logger("volguard.strategy").info("intent_proposed", bucket="weekly")

    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert (line["service"], line["bucket"]) == ("strategy", "weekly")


def test_message_context_is_bound_inside_and_removed_after() -> None:
    stream = configured()
    log = vg_logging.get_logger("volguard.bus")

    with vg_logging.bind_message_context(correlation_id="corr-1", event_id="evt-1", stream="st.intents"):
        log.info("handling")
        with vg_logging.bind_message_context(event_id="evt-2", attempt=2):
            log.info("nested")
        log.info("back")
    log.info("outside")

    handling, nested, back, outside = json_lines(stream)
    context_keys = ("correlation_id", "event_id", "stream")
    assert {k: handling[k] for k in context_keys} == {
        "correlation_id": "corr-1",
        "event_id": "evt-1",
        "stream": "st.intents",
    }
    assert {k: nested[k] for k in (*context_keys, "attempt")} == {
        "correlation_id": "corr-1",
        "event_id": "evt-2",
        "stream": "st.intents",
        "attempt": 2,
    }
    assert back["event_id"] == "evt-1"
    assert "attempt" not in back
    assert not set(context_keys) & set(outside)


def test_none_values_are_not_bound_and_do_not_hide_outer_bindings() -> None:
    stream = configured()
    with (
        vg_logging.bind_message_context(correlation_id="corr-1"),
        vg_logging.bind_message_context(correlation_id=None, stream="an.vol"),
    ):
        vg_logging.get_logger("x").info("inner")

    (line,) = json_lines(stream)
    assert line["correlation_id"] == "corr-1"
    assert line["stream"] == "an.vol"
    assert "event_id" not in line


def test_stdlib_records_use_the_same_formatter_and_context() -> None:
    stream = configured()

    with vg_logging.bind_message_context(correlation_id="corr-9", event_id="evt-9", stream="ex.commands"):
        logging.getLogger("asyncpg.pool").warning("pool %s of %d", "resized", 4)
        logging.getLogger("faststream.access.redis").info("received", extra={"channel": "ex.commands"})

    pool_line, faststream_line = json_lines(stream)
    assert pool_line["logger"] == "asyncpg.pool"
    assert pool_line["level"] == "warning"
    assert pool_line["service"] == "risk"
    assert pool_line["correlation_id"] == "corr-9"
    assert "timestamp" in pool_line
    assert faststream_line["logger"] == "faststream.access.redis"
    assert faststream_line["channel"] == "ex.commands"
    assert faststream_line["event_id"] == "evt-9"


def test_library_loggers_with_their_own_handlers_are_taken_over() -> None:
    # FastStream installs a stderr handler on "faststream" at import and stops propagation.
    import faststream  # noqa: F401

    library_logger = logging.getLogger("faststream")
    library_logger.addHandler(logging.StreamHandler(io.StringIO()))
    library_logger.propagate = False

    stream = configured()
    library_logger.info("broker_started")

    assert library_logger.handlers == []
    assert library_logger.propagate
    (line,) = json_lines(stream)
    assert (line["logger"], line["service"]) == ("faststream", "risk")


def test_adopt_stdlib_logger_for_loggers_created_later() -> None:
    stream = configured()
    late = logging.getLogger("faststream.access.redis")
    late.addHandler(logging.StreamHandler(io.StringIO()))
    late.propagate = False

    adopted = vg_logging.adopt_stdlib_logger("faststream.access.redis")
    adopted.info("consuming")

    assert adopted is late
    assert [line["logger"] for line in json_lines(stream)] == ["faststream.access.redis"]


def test_level_filters_structlog_and_stdlib_alike() -> None:
    stream = configured(level="warning")

    vg_logging.get_logger("volguard.x").info("dropped")
    logging.getLogger("uvicorn.error").info("dropped")
    vg_logging.get_logger("volguard.x").warning("kept")
    logging.getLogger("uvicorn.error").error("kept")

    assert [(line["logger"], line["level"]) for line in json_lines(stream)] == [
        ("volguard.x", "warning"),
        ("uvicorn.error", "error"),
    ]


def test_secrets_are_redacted() -> None:
    stream = configured()
    token = SecretStr("upstox-live-token")

    vg_logging.get_logger("volguard.settings").info(
        "settings_loaded",
        upstox_access_token=token,
        password="hunter2",
        database_url="postgresql://volguard:pg-pass@db:5432/volguard",
        broker={"api_key": "k-123", "nested": [token], "host": "api.upstox.com"},
        refresh_token=None,
    )
    logging.getLogger("uvicorn.error").info("connect %s", "redis://default:redis-pass@cache:6379/0")

    settings_line, stdlib_line = json_lines(stream)
    assert settings_line["upstox_access_token"] == vg_logging.REDACTED
    assert settings_line["password"] == vg_logging.REDACTED
    assert settings_line["database_url"] == f"postgresql://volguard:{vg_logging.REDACTED}@db:5432/volguard"
    assert settings_line["broker"] == {
        "api_key": vg_logging.REDACTED,
        "nested": [vg_logging.REDACTED],
        "host": "api.upstox.com",
    }
    assert settings_line["refresh_token"] is None  # "not configured" is worth seeing
    assert stdlib_line["event"].endswith(f"redis://default:{vg_logging.REDACTED}@cache:6379/0")
    raw = stream.getvalue()
    for secret in ("upstox-live-token", "hunter2", "pg-pass", "k-123", "redis-pass"):
        assert secret not in raw


def test_exceptions_are_structured_without_frame_locals() -> None:
    stream = configured()
    api_secret = SecretStr("in-a-local").get_secret_value()

    try:
        raise RuntimeError(f"order rejected ({len(api_secret)})")
    except RuntimeError:
        vg_logging.get_logger("volguard.execution").exception("submit_failed")
        logging.getLogger("faststream").exception("handler_failed")

    for line in json_lines(stream):
        (exception,) = line["exception"]
        assert exception["exc_type"] == "RuntimeError"
        assert exception["frames"]
        assert all("locals" not in frame or frame["locals"] is None for frame in exception["frames"])
    assert "in-a-local" not in stream.getvalue()


def test_json_renders_money_and_times_exactly() -> None:
    stream = configured()
    expiry = datetime(2026, 1, 27, 15, 30, tzinfo=UTC)

    vg_logging.get_logger("volguard.risk").info("credit", credit=Decimal("1234.05"), expiry=expiry)

    (line,) = json_lines(stream)
    assert line["credit"] == "1234.05"
    assert datetime.fromisoformat(line["expiry"]) == expiry


def test_console_format_is_key_value_not_json() -> None:
    stream = io.StringIO()
    vg_logging.configure_logging("market_data", fmt="console", level="INFO", stream=stream)

    vg_logging.get_logger("volguard.md").info("chain_published", expiry="2026-01-27")

    (text,) = stream.getvalue().splitlines()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert "service=market_data" in text
    assert "expiry=2026-01-27" in text


def test_reconfiguring_replaces_the_handler_instead_of_doubling_output() -> None:
    first = configured()
    second = configured()

    vg_logging.get_logger("x").info("once")

    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


@pytest.mark.parametrize(
    ("fmt", "level"),
    [("json", "LOUD"), ("xml", "INFO")],
)
def test_bad_format_or_level_is_refused(fmt: Any, level: str) -> None:
    with pytest.raises(ValueError, match="log"):
        vg_logging.configure_logging("risk", fmt=fmt, level=level, stream=io.StringIO())


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_secrets_are_masked_by_value_wherever_they_appear(fmt: vg_logging.LogFormat) -> None:
    token, quoted = "fake-broker-value-9f8e", 'pa"ss\\word-77'
    stream = io.StringIO()
    vg_logging.configure_logging("execution", fmt=fmt, stream=stream, secrets=[token, quoted, "ab"])
    log = vg_logging.get_logger("volguard.test")
    # No key names the secret here: only its value can give it away.
    log.warning(f"broker said: bearer {token} rejected", detail=f"header was {token}", note=quoted)
    try:
        raise RuntimeError(f"401 for token {token} and password {quoted}")
    except RuntimeError:
        log.exception("submit failed")
    logging.getLogger("uvicorn.error").error("upstream %s", token)
    log.info("a table about abc")

    text = stream.getvalue()
    assert token not in text
    assert quoted not in text
    assert json.dumps(quoted)[1:-1] not in text
    assert text.count(vg_logging.REDACTED) >= 6
    # Too short to mask by value: masking it would garble every line (and the check must not lean on
    # "ab" turning up by chance, e.g. in the checkout's path inside a traceback).
    assert "a table about abc" in text
    assert "submit failed" in text
    assert "RuntimeError" in text


def test_redact_text_masks_url_passwords_and_given_values() -> None:
    text = "cannot reach postgresql://volguard:pg-secret-1@db:5432/x with token tok-12345678"
    assert vg_logging.redact_text(text, ["tok-12345678"]) == (
        f"cannot reach postgresql://volguard:{vg_logging.REDACTED}@db:5432/x with token {vg_logging.REDACTED}"
    )
    assert vg_logging.url_password("redis://default:r-pass@cache:6379/0") == "r-pass"
    assert vg_logging.url_password("redis://cache:6379/0") is None
