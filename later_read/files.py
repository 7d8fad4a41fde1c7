"""Files the jobs write for people and collectors (`--report`, its uids file, the metrics textfile),
written whole or not at all, and never through a link someone planted.

`atomic_file(path)` creates a new file with a random name in the target's own directory, exclusively
(`O_CREAT | O_EXCL | O_NOFOLLOW`: an existing file or symlink of that name is an error, never opened),
mode 0640 whatever the umask, yields it for writing, then flushes, fsyncs and renames it over the target
(`os.replace`: a symlink at the target is replaced, its target left alone). On an error the temporary
file is removed and the target is as it was.

    with atomic_file("/var/log/later-read/push.json", "wb") as out:
        out.write(data)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MODE = 0o640  # the job's user reads and writes, its group (the collector, the on-call) reads
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 8


def _create(target: Path) -> tuple[int, Path]:
    """A new file next to `target` (same directory, so the rename stays on one filesystem)."""
    for _ in range(_ATTEMPTS):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(temp, _FLAGS, MODE)
        except FileExistsError:
            continue  # 64 random bits taken already: draw again
        os.fchmod(fd, MODE)  # the umask may have taken bits away
        return fd, temp
    raise FileExistsError(f"no free temporary name next to {target} after {_ATTEMPTS} tries")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """A file object to write `path`'s new content into; the target is replaced only on success."""
    target = Path(path)
    fd, temp = _create(target)
    try:
        with os.fdopen(fd, mode, **open_args) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """`data` as the whole new content of `path` (see `atomic_file`)."""
    with atomic_file(path, "wb") as out:
        out.write(data)
