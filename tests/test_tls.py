"""TLS to StarRocks against a real MariaDB with TLS on (certificates made here), and the refusal of a
cleartext password without TLS against a fake server that records whether the password arrived."""

from __future__ import annotations

import ssl

import pymysql
import pytest
import redis

from fake_mysql import FakeMySQL
from helpers import DATE, TASKS, invoke, seeding, servers
from later_read.clients.starrocks_login import connect_options
from later_read.config.settings import load_settings
from later_read.store.keys import Keys
from tls_certs import CA


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory):
    """A MariaDB of its own whose certificate names 127.0.0.1 only, signed by `ca`; a day seeded in it."""
    folder = tmp_path_factory.mktemp("tls")
    ca = CA(folder, "trusted")
    server = servers.MariaDBServer(tls=ca.server(["127.0.0.1"]))
    server.start()
    try:
        with server.connect() as conn:
            seeding.seed_day(conn, DATE, 40, TASKS)
        yield server, ca, CA(folder, "other")
    finally:
        server.stop()


def starrocks(server: servers.MariaDBServer, **tls) -> dict:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
        "connect_timeout_seconds": 3,
        **tls,
    }


def starrocks_line(result) -> str:
    return next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["starrocks"])


def test_a_verified_connection_reads_users_over_tls(tls_db, redis_url, sim, make_config):
    server, ca, _ = tls_db
    config = make_config(starrocks=starrocks(server, tls=True, tls_ca_file=ca.path))
    options = connect_options(load_settings(config, environ={}).starrocks)
    with pymysql.connect(**options) as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        assert cur.fetchone()[1].startswith("TLS")  # the session itself is encrypted
    checked = invoke("check", "--config", str(config), "--timeout", "5")
    assert starrocks_line(checked).startswith("ok   starrocks"), checked.stdout
    prewarm = invoke("prewarm", "--config", str(config), "--date", DATE)
    assert prewarm.exit_code == 0, prewarm.output
    client = redis.Redis.from_url(redis_url)
    try:
        assert len(client.keys(Keys("rec:later_read:").rec("*"))) == len(seeding.expected_users(DATE, 40, TASKS))
    finally:
        client.close()


def test_a_certificate_from_another_ca_fails_with_one_line(tls_db, redis_url, make_config):
    server, _, other = tls_db
    config = make_config(starrocks=starrocks(server, tls=True, tls_ca_file=other.path))
    checked = invoke("check", "--config", str(config), "--timeout", "5")
    assert starrocks_line(checked).startswith("FAIL starrocks")
    assert "TLS handshake failed (certificate verify failed" in starrocks_line(checked)
    prewarm = invoke("prewarm", "--config", str(config), "--date", DATE)
    assert prewarm.exit_code == 3
    assert prewarm.stderr.splitlines()[-1] == (
        f"later-read: error: StarRocks at 127.0.0.1:{server.port}: TLS handshake failed (certificate verify failed: "
        "self-signed certificate in certificate chain); check [starrocks] tls_ca_file (the CA that signed the server's "
        "certificate) and tls_verify_host (the certificate must name host)"
    )


def test_a_certificate_for_another_name_fails_unless_the_host_is_not_verified(tls_db, redis_url, make_config):
    server, ca, _ = tls_db
    by_name = starrocks(server, tls=True, tls_ca_file=ca.path, host="localhost")
    prewarm = invoke("prewarm", "--config", str(make_config(starrocks=by_name)), "--date", DATE)
    assert prewarm.exit_code == 3
    assert prewarm.stderr.splitlines()[-1].startswith(
        f"later-read: error: StarRocks at localhost:{server.port}: TLS handshake failed (certificate verify "
        "failed: Hostname mismatch, certificate is not valid for 'localhost'.)"
    )
    unverified = make_config(starrocks={**by_name, "tls_verify_host": False})
    with pymysql.connect(**connect_options(load_settings(unverified, environ={}).starrocks)) as conn:
        assert conn.get_server_info()  # the chain is still verified, only the name is not
    wrong_ca = make_config(starrocks={**by_name, "tls_verify_host": False, "tls_ca_file": tls_db[2].path})
    with pytest.raises(pymysql.err.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        pymysql.connect(**connect_options(load_settings(wrong_ca, environ={}).starrocks))


def test_tls_asked_of_a_server_without_it_is_one_line(mysql, redis_url, make_config):
    prewarm = invoke("prewarm", "--config", str(make_config(starrocks={"tls": True})), "--date", DATE)
    assert prewarm.exit_code == 3
    assert prewarm.stderr.splitlines()[-1] == (
        f"later-read: error: StarRocks at {mysql.host}:{mysql.port} does not offer TLS (SSL is required but the "
        "server doesn't support it); turn TLS on at the server or set [starrocks] tls = false"
    )


def test_a_cleartext_password_is_refused_without_tls_before_it_is_sent(make_config):
    with FakeMySQL() as fake:
        config = make_config(starrocks={"host": "127.0.0.1", "port": fake.port, "password": "Cleartext-Canary-9"})
        checked = invoke("check", "--config", str(config), "--timeout", "3")
    assert fake.switched == 1 and fake.received == []  # asked, and got nothing
    line = starrocks_line(checked)
    assert line.startswith("FAIL starrocks")
    assert (
        "asked for the password in clear text (mysql_clear_password) on a connection without TLS; "
        "refused, the password was not sent"
    ) in line
    assert "Cleartext-Canary-9" not in checked.output


def test_a_cleartext_password_goes_only_over_verified_tls(tmp_path, make_config):
    ca = CA(tmp_path)
    files = ca.server(["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    with FakeMySQL(tls=context) as fake:
        config = make_config(
            starrocks={
                "host": "127.0.0.1",
                "port": fake.port,
                "password": "Over-Tls-7",
                "tls": True,
                "tls_ca_file": ca.path,
            }
        )
        pymysql.connect(**connect_options(load_settings(config, environ={}).starrocks)).close()
    assert fake.tls_used and fake.received == [b"Over-Tls-7\x00"]


def test_tls_false_means_no_tls_so_a_cleartext_password_never_goes_over_unverified_tls(tmp_path, make_config):
    """With `tls = false` pymysql would by default take TLS whenever the server offers it, unverified (any
    certificate), and the cleartext guard would see a "secure" connection: an impostor offering TLS with a
    certificate of its own would be handed the password. `tls = false` is no TLS at all (`ssl_disabled`)."""
    ca = CA(tmp_path, "impostor")
    files = ca.server(["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    with FakeMySQL(tls=context) as fake:
        config = make_config(starrocks={"host": "127.0.0.1", "port": fake.port, "password": "Unverified-Tls-3"})
        checked = invoke("check", "--config", str(config), "--timeout", "3")
    assert fake.switched == 1 and not fake.tls_used and fake.received == []
    assert "refused, the password was not sent" in starrocks_line(checked)
    assert "Unverified-Tls-3" not in checked.output


def test_a_server_that_requires_tls_names_tls_in_the_fix_when_tls_is_off(tls_db, redis_url, sim, make_config):
    """`tls = false` is no TLS at all; MariaDB answers a login without the TLS it requires with "access
    denied", as for a wrong password, so the line names both fixes."""
    server, ca, _ = tls_db

    def require_tls(on: bool) -> None:
        with pymysql.connect(host="127.0.0.1", port=server.port, user="root", password="") as conn:
            conn.cursor().execute(f"SET GLOBAL require_secure_transport = {'ON' if on else 'OFF'}")

    require_tls(True)
    try:
        prewarm = invoke("prewarm", "--config", str(make_config(starrocks=starrocks(server))), "--date", DATE)
        with_tls = invoke(
            "prewarm",
            "--config",
            str(make_config(starrocks=starrocks(server, tls=True, tls_ca_file=ca.path))),
            "--date",
            DATE,
        )
    finally:
        require_tls(False)
    assert prewarm.exit_code == 3
    last = prewarm.stderr.splitlines()[-1]
    assert last.startswith(f"later-read: error: StarRocks at 127.0.0.1:{server.port} failed (1045: Access denied")
    assert last.endswith(
        "check [starrocks] host/port/user and LATER_READ__STARROCKS__PASSWORD, or set [starrocks] tls = true "
        "(and tls_ca_file) if the server requires TLS"
    )
    assert with_tls.exit_code == 0
