"""One redaction for every message that can carry a secret: `redact(text)`.

Two nets, both applied to every printed line (log lines, error lines, tracebacks, `check`, `show`,
`sent` and `rerun` output, reports, ping bodies):

1. Forms, whoever wrote the text: the userinfo of a URL or DSN (`scheme://user:password@host` becomes
   `scheme://***@host`; the userinfo runs to the token's last `@`, so a password holding `/`, `:`, `#`
   or `@` unencoded is hidden whole), and the value of every secret-looking `key=value`
   (`?password=`, `&token=`, `secret=`, `sasl.password=`, ...).
2. Values: every configured secret, registered once when the settings load (`register_config`, on the
   raw file and environment, so even a config error about the value is scrubbed): values of keys named
   like secrets (`password`, `sentinel_password`, `sasl.password`, ...), the password and secret query
   values of every URL, and the token/UUID path segments of the monitor's ping URLs. Each is replaced
   wherever it appears, in its plain, percent-encoded, JSON/logfmt-escaped and repr forms, in a URL or not.

Values shorter than MIN_SECRET_CHARS are not scrubbed as free text (they would blank out ordinary
words); their URL and key=value forms still are. Why one leaf module: docs/design.md, "Secrets".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 4
MIN_PING_SEGMENT_CHARS = 8  # a ping URL's token or UUID segment; `p`, `ping`, `fail` are not secrets

_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key.pem",
    "jaas",
    "apikey",
    "api_key",
    "credential",
    "oauthbearer.config",
    "signature",
)
_QUERY_NAMES = ("pass", "key", "sig", "auth", "code")  # secrets only as a URL's query keys (`?key=`)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s\"'<>\[\]]*)@")
_KEY_VALUE = re.compile(r"(?P<lead>[?&;]?)(?P<key>[A-Za-z0-9_.-]+)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s&#;,\"'<>)]*)")

_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def secret_key(name: str, query: bool = False) -> bool:
    """Whether a setting or query key names a secret (`password`, `sasl.password`, `token`, ...; in a URL's
    query (`query`) also `key`, `sig`, `auth`, `pass`, `code`)."""
    lowered = name.lower()
    return (query and lowered in _QUERY_NAMES) or any(word in lowered for word in _SECRET_WORDS)


def redact(text: str) -> str:
    """`text` with every secret form and every registered secret value replaced by `***`."""
    if _pattern is not None:
        text = _pattern.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "=" in text:
        text = _KEY_VALUE.sub(_key_value, text)
    return text


def _key_value(match: re.Match[str]) -> str:
    if not match["value"] or not secret_key(match["key"], query=bool(match["lead"])):
        return match[0]
    return f"{match['lead']}{match['key']}={MASK}"


def redact_data(data: Any) -> Any:
    """A JSON-able value (a report) with every string redacted."""
    return json.loads(redact(json.dumps(data, ensure_ascii=False)))


def register(*values: object) -> None:
    """Scrub these values (and their encoded forms) from every message from now on."""
    global _pattern  # noqa: PLW0603 - the registry of secrets is process-wide by design
    added = False
    for value in values:
        for form in _forms(str(value)):
            if len(form) >= MIN_SECRET_CHARS and form not in _values:
                _values.add(form)
                added = True
    if added:
        ordered = sorted(_values, key=len, reverse=True)  # longest first: a value inside another is hidden too
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def _forms(value: str) -> Iterable[str]:
    yield value
    yield quote(value, safe="")
    yield quote(value)
    yield quote_plus(value)
    yield json.dumps(value)[1:-1]
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield repr(value)[1:-1]


def register_config(raw: Mapping[str, Any]) -> None:
    """Register every secret of a config (the parsed file with the environment applied), before it is
    checked: values of secret-named keys, URL passwords and secret query values, ping URL tokens."""
    for key, value in _leaves(raw):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        if secret_key(key):
            register(value)
        if isinstance(value, str) and "://" in value:
            register_url(value, ping=key.endswith("ping_url"))


def _leaves(node: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        elif isinstance(value, list):
            yield from ((str(key), item) for item in value)
        else:
            yield str(key), value


def register_url(url: str, ping: bool = False) -> None:
    """Register a URL's password (also when `/`, `?` or `#` in it broke the URL's parsing), its secret
    query values and, for a ping URL (`ping`), its long path segments and every query value."""
    rest = url.split("://", 1)[1]
    if "@" in rest:
        password = rest.rsplit("@", 1)[0].partition(":")[2]
        register(password, unquote(password))
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if ping or secret_key(key, query=True):
            register(value)
    if ping:
        register(*(s for s in parts.path.split("/") if len(s) >= MIN_PING_SEGMENT_CHARS))
