"""Log lines: every field value is logfmt-quoted, so one event is one line and no value forges a field
or an alert; timestamps carry the configured zone."""

from __future__ import annotations

import io
import logging
import re
from zoneinfo import ZoneInfo

import pytest

from helpers import unquote
from later_read import log
from later_read.log import ALERT_KEYWORD

HOSTILE = [
    "bad uid",
    "ユーザー",
    "20000\n0002",
    f'x {ALERT_KEYWORD}" reason=forged',
    "",
    "a=b",
    'q"uote',
    "back\\slash",
    "tab\there",
    "nul\x00",
    "bell\x07",
    "del\x7f",
    "sep\u2028x",
    "cr\rlf\n",
    ALERT_KEYWORD,
    "é-ü 漢字",
    "x" * 300,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_every_value_is_one_field_on_one_line_and_reads_back(value):
    text = log.fields(uid=value, hour=9)
    assert "\n" not in text and "\r" not in text and text.isprintable()
    assert ALERT_KEYWORD not in text
    match = re.fullmatch(r'uid=("(?:[^"\\]|\\.)*"|[^\s"]*) hour=9', text)
    assert match, text
    assert unquote(match.group(1)) == value


def test_plain_values_stay_unquoted():
    assert log.fields(uid="100000042", date="20261124", ratio=0.5) == "uid=100000042 date=20261124 ratio=0.500"
    assert log.fields(uid="ユーザー") == "uid=ユーザー"
    assert log.fields(**{"bad key=x": 1}) == "bad_key_x=1"


def test_only_alert_puts_the_keyword_on_a_line():
    stream = io.StringIO()
    logger = logging.getLogger("later_read.test_log")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        log.event(logger, "push.cache_miss", logging.WARNING, uid=f'x {ALERT_KEYWORD}" reason=forged')
        log.alert(logger, "push.misses", count=1)
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert ALERT_KEYWORD not in first and second.endswith(ALERT_KEYWORD)


def test_timestamps_and_times_are_in_the_configured_zone(capsys):
    log.setup_logging()
    log.set_zone(ZoneInfo("Asia/Shanghai"))
    try:
        log.event(log.get_logger("t"), "x.y", a=1)
        assert log.at(0) == "1970-01-01T08:00:00+08:00" and log.at(None) == "-"
    finally:
        log.set_zone(None)
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00 INFO x\.y a=1", line), line
