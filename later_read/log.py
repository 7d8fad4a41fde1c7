"""Log lines are event names with details as key=value fields, so alert rules can match them.

    2026-11-24T00:01:07+0800 WARNING push.cache_miss uid=1042 date=20261124 hour=9 LATER_READ_ALERT

Alert lines carry `constants.ALERT_KEYWORD`; docs/alerting.md lists every one of them.
"""

from __future__ import annotations

import logging
import sys

from later_read.constants import ALERT_KEYWORD

LOGGER_NAME = "later_read"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr, one line per event; stdout stays free for results (JSON, messages)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def fields(**values: object) -> str:
    """Render key=value pairs; values with spaces are quoted so a line stays one parseable record."""
    parts = []
    for key, value in values.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', "'") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **values: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s", name, fields(**values))


def alert(logger: logging.Logger, name: str, **values: object) -> None:
    """An ERROR/WARNING line that alerting matches on: `<event> <fields> LATER_READ_ALERT`."""
    logger.warning("%s %s %s", name, fields(**values), ALERT_KEYWORD)
