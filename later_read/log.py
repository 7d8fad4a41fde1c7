"""Log lines are event names with details as key=value fields, so alert rules can match them.

    2026-11-24T00:01:07.412+08:00 WARNING push.cache_miss uid=1042 date=20261124 hour=9 LATER_READ_ALERT

Every field value goes through logfmt quoting (`quote`): a value with a space, `"`, `=` or `\\` is
quoted, `"` and `\\` are backslash-escaped, and newlines, control and other non-printable characters are
written as `\\n`, `\\t`, `\\xNN`, `\\uNNNN`; the alert keyword inside a value is written `LATER_READ\\x5fALERT`.
So one event is always one line, no value can end its field or start another, and only `alert()` puts
the keyword on a line (a uid such as `x LATER_READ_ALERT" reason=y` cannot forge an alert).

Timestamps are in the configured zone with its offset (`set_zone`, called once the settings are read;
the process's zone until then), like the dates and hours the jobs work on. Epoch times meant for people
go through `at()`. Alert lines carry `ALERT_KEYWORD`; docs/alerting.md lists every one of them.
Every line is redacted by the handler's formatter (`redact.redact`: URL passwords, secret query values,
the configured secrets).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from zoneinfo import ZoneInfo

from later_read.redact import redact

# Stable words alert rules match on; docs/alerting.md lists them with what to run next.
ALERT_KEYWORD = "LATER_READ_ALERT"

LOGGER_NAME = "later_read"
SUMMARY = 25  # between INFO and WARNING: a run's summary lines show even with --quiet
logging.addLevelName(SUMMARY, "SUMMARY")
_zone: dt.tzinfo | None = None  # None: the process's local zone
_PLAIN = re.compile(r"[^\s\"=\\]+")  # a value needing no quotes (printable, checked separately)
_SAFE_KEY = re.compile(r"[^A-Za-z0-9_.:-]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}
_DEFUSED = ALERT_KEYWORD.replace("_ALERT", "\\x5fALERT")


def set_zone(zone: ZoneInfo | None) -> None:
    """Write timestamps (and `at()` times) in this zone from now on."""
    global _zone  # noqa: PLW0603 - the one setting, made once by the CLI at start-up
    _zone = zone


def at(epoch: object) -> str:
    """An epoch time as people read it: `2026-11-24T00:01:07+08:00` in the configured zone; "-" for None
    (anything that is not a number is shown as it is)."""
    if epoch is None:
        return "-"
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return str(epoch)
    return dt.datetime.fromtimestamp(epoch, _zone or dt.datetime.now().astimezone().tzinfo).isoformat(
        timespec="seconds"
    )


class _Formatter(logging.Formatter):
    """Timestamps in the configured zone; every line (and any traceback in it) goes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        zone = _zone or dt.datetime.now().astimezone().tzinfo
        return dt.datetime.fromtimestamp(record.created, zone).isoformat(timespec="milliseconds")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr, one line per event; stdout stays free for results (JSON, messages). A library's own
    warnings (loggers without a handler) go out through the same redacting format (`logging.lastResort`)."""
    level = logging.DEBUG if verbose else SUMMARY if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    last_resort = logging.StreamHandler(sys.stderr)
    last_resort.setLevel(logging.WARNING)
    last_resort.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.lastResort = last_resort


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def quote(text: str, always: bool = False) -> str:
    """logfmt quoting of one value (see the module docstring); plain values stay as they are unless
    `always`."""
    if not always and text and _PLAIN.fullmatch(text) and text.isprintable() and ALERT_KEYWORD not in text:
        return text
    escaped = "".join(_escape_char(c) for c in text)
    return '"' + escaped.replace(ALERT_KEYWORD, _DEFUSED) + '"'


def printable(text: str) -> str:
    """Free text made safe for one line of a command's output (`check`, `show`, `rerun`): newlines,
    control and other non-printable characters escaped as `quote` writes them and the alert keyword
    defused, no quotes added. Values inside the text should still be `quote`d, so they are delimited."""
    if text.isprintable() and ALERT_KEYWORD not in text:
        return text
    escaped = "".join(c if c.isprintable() else _escape_char(c) for c in text)
    return escaped.replace(ALERT_KEYWORD, _DEFUSED)


def defused_json(text: str) -> str:
    """JSON text (one line: JSON escapes control characters) with the alert keyword written with a JSON
    escape (`\\u005f`): the same data once parsed, and no line an alert rule would match."""
    return text.replace(ALERT_KEYWORD, ALERT_KEYWORD.replace("_ALERT", "\\u005fALERT"))


def fields(**values: object) -> str:
    """Render key=value pairs with every value quoted as logfmt needs: one parseable record per line."""
    parts = []
    for key, value in values.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        parts.append(f"{_SAFE_KEY.sub('_', key) or '_'}={quote(text)}")
    return " ".join(parts)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **values: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s", name, fields(**values))


def summary(logger: logging.Logger, line: str) -> None:
    """One of a run's summary lines (already built with `fields`), timestamped like every other line."""
    logger.log(SUMMARY, "%s", line)


def alert(logger: logging.Logger, name: str, **values: object) -> None:
    """An ERROR/WARNING line that alerting matches on: `<event> <fields> LATER_READ_ALERT`."""
    logger.warning("%s %s %s", name, fields(**values), ALERT_KEYWORD)
