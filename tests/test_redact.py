"""`redact`, the one redaction: every form a secret takes in a URL or DSN, and every configured secret in
every encoding, wherever it appears; ordinary text left alone."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from later_read import redact as r
from later_read.config.settings import load_settings


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Redis at redis://:pw@127.0.0.1:6379/0 unreachable", "Redis at redis://***@127.0.0.1:6379/0 unreachable"),
        ("redis://user:p%2Fw%40x@h:1/0", "redis://***@h:1/0"),
        ("redis://:pa/ss@h:1/0 and more", "redis://***@h:1/0 and more"),  # '/' unencoded
        ("redis://:pa@ss:w#rd@h:1/0", "redis://***@h:1/0"),  # '@', ':', '#' unencoded
        ("mysql://root:secret@127.0.0.1:3306/db", "mysql://***@127.0.0.1:3306/db"),
        ('error="redis://u:p@h:1"', 'error="redis://***@h:1"'),
        ("redis://h:6379/0?password=abc&db=1", "redis://h:6379/0?password=***&db=1"),
        ("https://x.io/api?key=k3y&sig=s1g&q=books", "https://x.io/api?key=***&sig=***&q=books"),
        (
            "sasl.password=hunter2 token=t0k access_token=a secret=s",
            "sasl.password=*** token=*** access_token=*** secret=***",
        ),
        ("expected redis://[user:password@]host[:port][/db]", "expected redis://[user:password@]host[:port][/db]"),
        (
            "lock.refresh_failed key=later_read:lock:push:20261123:09",
            "lock.refresh_failed key=later_read:lock:push:20261123:09",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("(using password: YES)", "(using password: YES)"),
    ],
)
def test_forms_are_redacted_whoever_wrote_the_text(text, expected):
    assert r.redact(text) == expected


def test_a_registered_secret_is_scrubbed_in_every_encoding_and_anywhere():
    secret = 'Reg1stered/@:#"\\x'
    r.register(secret)
    for form in (secret, quote(secret, safe=""), quote(secret), json.dumps(secret)[1:-1], repr(secret)[1:-1]):
        assert r.redact(f"before {form} after") == "before *** after"
    assert r.redact("ordinary words stay") == "ordinary words stay"


def test_short_values_are_not_scrubbed_as_free_text():
    r.register("ab", "abc")
    assert r.redact("abc abcd ab") == "abc abcd ab"


def test_loading_a_config_registers_every_secret(tmp_path):
    from conftest import default_config, merge
    from later_read_sandbox.stack import render_toml

    path = tmp_path / "config.toml"
    path.write_text(
        render_toml(
            merge(
                default_config(),
                {
                    "starrocks": {"password": "Sr-Load-Secret"},
                    "redis": {
                        "url": f"redis://:{quote('Rd-Load/Secret', safe='')}@h:1/0?password=Rq-Load-Secret",
                        "sentinel_password": "Sn-Load-Secret",
                    },
                    "kafka": {"librdkafka": {"sasl.password": "Ks-Load-Secret", "sasl.username": "later-read-user"}},
                    "monitor": {"push_ping_url": "https://hc-ping.com/5f3a1c2e-8d4b-4f1e-9a7c-0b6d2e4f8a10"},
                },
            )
        )
    )
    load_settings(path, environ={"LATER_READ__METRICS__PUSHGATEWAY_URL": "https://pgw.example?token=Pg-Load-Secret"})
    text = (
        "Sr-Load-Secret Rd-Load/Secret Rd-Load%2FSecret Rq-Load-Secret Sn-Load-Secret Ks-Load-Secret "
        "Pg-Load-Secret https://hc-ping.com/5f3a1c2e-8d4b-4f1e-9a7c-0b6d2e4f8a10/fail later-read-user"
    )
    assert r.redact(text) == "*** *** *** *** *** *** *** https://hc-ping.com/***/fail later-read-user"


def test_a_report_is_redacted_value_by_value():
    r.register("Report-Secret-9")
    assert r.redact_data({"error": "x Report-Secret-9", "n": 3, "uids": ["redis://u:p@h"]}) == {
        "error": "x ***",
        "n": 3,
        "uids": ["redis://***@h"],
    }
