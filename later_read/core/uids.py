"""One uid rule for every command: a uid is what StarRocks can hold, shown escaped.

`source_uid` is a string column: spaces, `ユーザー`, `20000\\n0002`, quotes are all possible, and every
command takes them (prewarm, push, show, rerun, --uids-file). A uid is *servable* when it is non-empty,
valid UTF-8 and at most MAX_UID_BYTES bytes; a row whose uid is not is counted and alerted by the jobs as
`unservable` (never sent to A/B, never silently dropped). Wherever a uid is shown it goes through logfmt
quoting (`log.quote`): a plain uid as it is, any other in double quotes with `\\n`, `\\"`, `\\\\`, `\\xNN`.

Uid files (`--uids-file`, and the lists the jobs write next to `--report`) hold one uid per line, either
plain, or quoted exactly as the logs show it (so a uid copied from a log line works), then an optional
`# comment`. Blank lines and comment lines are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from later_read.errors import UsageError
from later_read.files import atomic_file
from later_read.log import quote

# Longer than any real uid (numeric ids, UUIDs, ~40-byte device ids) by far; short enough that one bad
# row cannot make a 1 MB Redis key, Kafka key and log line.
MAX_UID_BYTES = 1024
UNSERVABLE_EMPTY = "uid_empty"
UNSERVABLE_LONG = "uid_too_long"
UNSERVABLE_ENCODING = "uid_not_utf8"
_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[nrt"\\])')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(?:#.*)?')


def unservable(uid: str) -> str | None:
    """Why the jobs cannot serve this uid (a reason label), or None when they can."""
    if uid.isascii() and 0 < len(uid) <= MAX_UID_BYTES:  # the common case, without encoding it
        return None
    if not uid:
        return UNSERVABLE_EMPTY
    try:
        size = len(uid.encode("utf-8"))
    except UnicodeEncodeError:
        return UNSERVABLE_ENCODING
    return UNSERVABLE_LONG if size > MAX_UID_BYTES else None


def show(uid: str, limit: int = 80) -> str:
    """The uid as logs show it, cut after `limit` characters (saying how long it was)."""
    if len(uid) <= limit:
        return quote(uid)
    return f"{quote(uid[:limit])}... ({len(uid)} characters)"


def parse_uid(text: str) -> str:
    """A uid typed on the command line: taken literally; refused only when no job could serve it."""
    reason = unservable(text)
    if reason == UNSERVABLE_EMPTY:
        raise UsageError("uid: empty; give the uid as StarRocks stores it (quote it in the shell)")
    if reason == UNSERVABLE_LONG:
        raise UsageError(f"uid {show(text, 40)}: longer than {MAX_UID_BYTES} bytes; no job serves it")
    if reason == UNSERVABLE_ENCODING:
        raise UsageError(f"uid {show(text, 40)}: not valid UTF-8 (StarRocks strings are UTF-8)")
    return text


def unescape(body: str) -> str:
    """The inverse of `log.quote` for the text between the quotes."""
    named = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    return _ESCAPE.sub(lambda m: named.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), body)


def line_of(uid: str, comment: str = "") -> str:
    """One uid-file line: the uid plain when that reads back the same, else quoted; then `# comment`."""
    plain = uid.strip() == uid and "#" not in uid and not uid.startswith('"') and quote(uid) == uid
    return (uid if plain else quote(uid, always=True)) + (f"  # {comment}" if comment else "")


def parse_line(line: str) -> str | None:
    """The uid on one uid-file line, None for a blank or comment line; ValueError if unreadable."""
    text = line.strip()
    if text.startswith('"'):
        match = _QUOTED.fullmatch(text)
        if not match:
            raise ValueError('a quoted uid must end with a closing " (then only a # comment)')
        return unescape(match.group(1))
    text = text.split("#", 1)[0].strip()
    return text or None


def read_file(path: str | Path) -> list[str]:
    """The uids of a file (see the module docstring); duplicates dropped, order kept; UsageError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--uids-file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--uids-file: {path} is not UTF-8 text (one uid per line)") from None
    uids: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        try:
            uid = parse_line(line)
            if uid is not None:
                uids[parse_uid(uid)] = None
        except (ValueError, UsageError) as exc:
            raise UsageError(f"--uids-file {path} line {number}: {exc}") from None
    if not uids:
        raise UsageError(f"--uids-file: {path} lists no uids")
    return list(uids)


def write_file(path: str | Path, named: Iterable[tuple[str, str]]) -> int:
    """Write (uid, reason) pairs as a uid file `--uids-file` reads back (whole or not at all,
    files.atomic_file); the number of lines written."""
    count = 0
    with atomic_file(path, "w", encoding="utf-8") as out:
        out.write("# uids this run could not finish, with the reason; rerun with --uids-file THIS_FILE\n")
        for uid, reason in named:
            if unservable(uid) is not None:  # --uids-file would refuse it; the row needs fixing instead
                out.write(f"# {reason}: {show(uid)} (no job can serve this uid; fix the row)\n")
                continue
            out.write(line_of(uid, reason) + "\n")
            count += 1
    return count
