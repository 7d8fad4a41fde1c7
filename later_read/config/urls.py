"""Full checks of the URLs and addresses in the config: each returns None when fine, else what is wrong.

`urllib.parse.urlsplit` splits them; the checks then ask what each client needs: a host, a numeric port
1-65535, a scheme the client speaks (our HTTP client speaks plain http only: the services are plain HTTP
on the internal network, docs/design.md), and for Redis a database that is an integer (redis-py silently
falls back to database 0 on `/x`).
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qs, urlsplit


def _port_problem(parts: SplitResult) -> str | None:
    try:
        port = parts.port
    except ValueError:
        return f"port {parts.netloc.rpartition(':')[2]!r} is not a number from 1 to 65535"
    if port == 0:
        return "port 0 is not a number from 1 to 65535"
    return None


def _userinfo_problem(url: str) -> str | None:
    """A password whose `/`, `?` or `#` is not percent-encoded ends the URL's host part inside it: the rest
    of the password would be read as a port, a path or a query (and echoed in an error)."""
    rest = url.split("://", 1)[-1]
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    host_part = rest[: min(ends)] if ends else rest
    if "@" not in host_part and "@" in rest:
        return "user:password@ holds a '/', '?' or '#' that is not percent-encoded (write them %2F, %3F, %23)"
    return None


def http_problem(url: str, https_ok: bool = False) -> str | None:
    """What is wrong with a service URL (https too when `https_ok`: the Pushgateway's and the pings'
    client), or None."""
    problem = _userinfo_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    if parts.scheme == "https" and not https_ok:
        return "https:// is not supported (the HTTP client speaks plain http, as the internal services do)"
    if parts.scheme not in ("http", "https"):
        return f"scheme must be http://, not {parts.scheme + '://' if parts.scheme else 'missing'}"
    if not parts.hostname:
        return "no host"
    if parts.username is not None or parts.fragment:
        return "user:password@ and #fragment are not supported"
    return _port_problem(parts)


def redis_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None."""
    problem = _userinfo_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"scheme must be redis://, rediss:// or unix://, not {parts.scheme or 'missing'}"
    query = parse_qs(parts.query)
    databases = query.get("db", [])
    if parts.scheme == "unix":
        if not parts.path:
            return "no socket path"
    else:
        if not parts.hostname:
            return "no host"
        problem = _port_problem(parts)
        if problem:
            return problem
        if parts.path.strip("/"):
            databases = [parts.path.strip("/"), *databases]
    for db in databases:
        if not (db.isdigit() and int(db) < 100_000):
            return f"database {db!r} is not a non-negative integer"
    return None


def bootstrap_problem(servers: str) -> str | None:
    """What is wrong with a Kafka bootstrap list `host:port[,host:port...]`, or None."""
    for server in servers.split(","):
        host, colon, port = server.strip().rpartition(":")
        if not colon or not host:
            return f"{server.strip()!r} is not host:port"
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"port {port!r} of {server.strip()!r} is not a number from 1 to 65535"
    return None
