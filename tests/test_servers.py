"""The test servers are real and usable: data makes a round trip through each, overrides are
honoured, and a missing program fails loudly with one line saying what to install."""

from __future__ import annotations

import time
import tomllib
from collections import defaultdict

import pytest
import redis
from confluent_kafka import Consumer, Producer

from later_read_sandbox import servers


def test_redis_round_trip_with_ttl(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("rec:later_read:u1", '{"rec_id": "r1"}', ex=600)
        assert client.get("rec:later_read:u1") == b'{"rec_id": "r1"}'
        assert 590 <= client.ttl("rec:later_read:u1") <= 600
    finally:
        client.close()


TASK_DATA = """CREATE TABLE task_data (
    task_id VARCHAR(64) NOT NULL, source_uid VARCHAR(64) NOT NULL, project VARCHAR(32) NOT NULL,
    push_hour TINYINT NOT NULL, book_id VARCHAR(64) NOT NULL)"""


def test_mariadb_round_trip(mysql):
    rows = [("04-026-20261123-r0gdua", f"u{i}", "novel", i % 24, f"b{i}") for i in range(50)]
    rows.append(("04-026-20261123-qk79ub", "u1", "novel", 1, "b-serial"))  # a uid under both tasks
    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute(TASK_DATA)
        cur.executemany("INSERT INTO task_data VALUES (%s, %s, %s, %s, %s)", rows)
        cur.execute(
            "SELECT task_id, source_uid, project, push_hour, book_id FROM task_data "
            "WHERE task_id IN (%s, %s) AND push_hour = %s ORDER BY source_uid, task_id",
            ("04-026-20261123-r0gdua", "04-026-20261123-qk79ub", 1),
        )
        got = cur.fetchall()
    assert got == (
        ("04-026-20261123-qk79ub", "u1", "novel", 1, "b-serial"),
        ("04-026-20261123-r0gdua", "u1", "novel", 1, "b1"),
        ("04-026-20261123-r0gdua", "u25", "novel", 1, "b25"),
        ("04-026-20261123-r0gdua", "u49", "novel", 1, "b49"),
    )


def test_mysql_fixture_gives_each_test_its_own_database(mysql, mariadb_server):
    assert mysql.database.startswith("t_test_mysql_fixture")
    assert mysql.database != mariadb_server.database
    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()")
        assert cur.fetchone() == (mysql.database, 0)


def _produce(bootstrap: str, topic: str, messages: list[tuple[str, str]]) -> dict[str, set[int]]:
    """Produce with acks=all and idempotence; returns the partitions each key was delivered to."""
    delivered: dict[str, set[int]] = defaultdict(set)
    errors = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(error)
        else:
            delivered[message.key().decode()].add(message.partition())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    return delivered


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received, deadline = [], time.monotonic() + timeout
    try:
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                received.append(message)
    finally:
        consumer.close()
    return received


def test_kafka_round_trip_keyed(kafka_topic):
    bootstrap, topic = kafka_topic
    sent = [(f"uid-{i % 10}", f'{{"seq": {i}}}') for i in range(60)]
    delivered = _produce(bootstrap, topic, sent)
    assert all(len(parts) == 1 for parts in delivered.values())  # one key, one partition
    assert len({p for parts in delivered.values() for p in parts}) > 1  # keys spread over partitions

    received = _consume(bootstrap, topic, len(sent))
    assert sorted((m.key().decode(), m.value().decode()) for m in received) == sorted(sent)
    by_key = defaultdict(list)
    for message in received:
        assert {message.partition()} == delivered[message.key().decode()]
        by_key[message.key().decode()].append(message.value().decode())
    for key, values in by_key.items():  # per key, order is kept
        assert values == [value for k, value in sent if k == key]


def test_kafka_topic_has_three_partitions(kafka_server, kafka_topic):
    _, topic = kafka_topic
    metadata = kafka_server.admin().list_topics(topic=topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 3


def test_env_override_starts_nothing(redis_server, monkeypatch, tmp_path):
    """With LATER_READ_TEST_REDIS_URL set the factory only points at it: even with no redis-server
    on PATH it starts, and stopping it leaves the real server running."""
    monkeypatch.setenv(servers.REDIS_ENV, redis_server.url)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers.process, "SBIN_DIRS", ())
    with servers.redis_server() as external:
        assert not external.managed
        assert external.url == redis_server.url and external.port == redis_server.port
        assert external.child is None and external.tempdir is None
    client = redis_server.client()
    try:
        assert client.ping()
    finally:
        client.close()
    with pytest.raises(servers.ServerUnavailable, match="cannot stop the external redis"):
        external.stop_process()


def test_env_override_that_does_not_answer_says_so(monkeypatch):
    monkeypatch.setenv(servers.REDIS_ENV, f"redis://127.0.0.1:{servers.free_port()}/0")
    with pytest.raises(servers.ServerUnavailable, match="does not answer PING") as caught:
        servers.redis_server().start()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "server_class, message",
    [
        (
            servers.RedisServer,
            ("redis-server not found: run `apt-get install redis-server` (or set LATER_READ_TEST_REDIS_URL)"),
        ),
        (
            servers.MariaDBServer,
            ("mariadbd not found: run `apt-get install mariadb-server` (or set LATER_READ_TEST_MYSQL)"),
        ),
        (
            servers.KafkaServer,
            ("java not found: run `apt-get install openjdk-17-jre-headless` (or set LATER_READ_TEST_KAFKA)"),
        ),
    ],
)
def test_missing_program_is_one_clear_line(server_class, message, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers.process, "SBIN_DIRS", ())
    server = server_class()
    with pytest.raises(servers.ServerUnavailable) as caught:
        server.start()
    assert str(caught.value) == message
    assert server.tempdir is None  # nothing left behind


def test_redis_stop_process_and_restart():
    with servers.RedisServer() as server:
        client = server.client()
        try:
            assert client.ping()
            server.stop_process()
            with pytest.raises(redis.ConnectionError):
                client.ping()
            server.restart()
            assert client.ping()  # same port
        finally:
            client.close()
        tempdir = server.tempdir
    assert not tempdir.exists()


def test_kafka_restart_keeps_data():
    """A broker restarted in place still has its topics and messages (what fault tests rely on)."""
    with servers.KafkaServer() as server:
        topic = server.create_topic("restart_me", partitions=3)
        _produce(server.bootstrap, topic, [("k", "before restart")])
        server.stop_process()
        server.restart()
        received = _consume(server.bootstrap, topic, 1)
        assert [(m.key(), m.value()) for m in received] == [(b"k", b"before restart")]
        child = server.child
    assert child.popen is None  # killed and reaped


def test_make_config_points_at_requested_servers(make_config, redis_url, mysql, kafka_topic):
    path = make_config(prewarm={"concurrency": 10}, kafka={"librdkafka": {"linger.ms": 5}})
    config = tomllib.loads(path.read_text())
    assert config["redis"] == {"url": redis_url, "key_prefix": "rec:later_read:", "ttl_seconds": 86400}
    assert config["starrocks"]["port"] == mysql.port and config["starrocks"]["database"] == mysql.database
    assert config["starrocks"]["table"] == "task_data"
    assert (config["kafka"]["bootstrap_servers"], config["kafka"]["topic"]) == kafka_topic
    assert config["kafka"]["librdkafka"] == {"linger.ms": 5}
    assert config["prewarm"] == {"concurrency": 10} and config["push"] == {"concurrency": 50}
    assert config["services"]["timeout_seconds"] == 2.0
    assert config["tasks"]["ids"] == ["04-026-{date}-r0gdua", "04-026-{date}-qk79ub"]


def test_make_config_defaults_and_deletions(make_config):
    first = make_config()
    second = make_config(redis={"ttl_seconds": None}, timezone="UTC", starrocks={"password": 'p"w\\\nx\x01'})
    assert first.name == "config.toml" and second.name == "config-2.toml"
    assert tomllib.loads(first.read_text())["redis"]["url"] == "redis://127.0.0.1:6379/0"
    config = tomllib.loads(second.read_text())
    assert "ttl_seconds" not in config["redis"] and config["timezone"] == "UTC"
    assert config["starrocks"]["password"] == 'p"w\\\nx\x01'  # tomli-w escapes what TOML needs
    assert config["kafka"]["librdkafka"] == {}


# The users reader: per-task keyset pages merged by uid, against the real MariaDB -------------------------
def _reader(mysql, batch_size: int):
    from later_read.clients.starrocks import StarRocks
    from later_read.config.settings import StarRocksSettings

    return StarRocks(
        StarRocksSettings(
            host=mysql.host,
            port=mysql.port,
            user=mysql.user,
            password=mysql.password,
            database=mysql.database,
            batch_size=batch_size,
        )
    )


def _read_all(reader, query) -> list[list]:
    import asyncio

    async def pages():
        return [page async for page in reader.users(query)]

    try:
        return asyncio.run(pages())
    finally:
        reader.close()


def test_users_are_merged_across_task_ids_in_byte_order_one_per_uid(mysql):
    from later_read.clients.starrocks import UserQuery
    from later_read.core.users import TaskUser
    from later_read_sandbox.seed import DDL

    a, b, other = "04-026-20261123-r0gdua", "04-026-20261123-qk79ub", "04-026-20261122-r0gdua"
    uids = [str(n) for n in range(1, 40)] + ["Zed", "alice", "é-uid", "9" * 20]
    rows = [(a, uid, "novel", 21, "b") for uid in uids[::2]]  # every other uid under task a
    rows += [(b, uid, "comic", 21, "b") for uid in uids[::3]]  # every third under task b
    rows += [(a, "7", "comic", 5, "b"), (other, "1000", "novel", 21, "b")]  # another hour, another date
    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute(DDL.format(table="task_data"))
        cur.executemany("INSERT INTO task_data VALUES (%s, %s, %s, %s, %s)", rows)
        conn.commit()
    for batch_size in (1, 4, 1000):  # pages smaller than, and larger than, the data
        pages = _read_all(_reader(mysql, batch_size), UserQuery("task_data", [a, b], hour=21))
        users = [user for page in pages for user in page]
        wanted = sorted(set(uids[::2]) | set(uids[::3]))  # Python order = byte order = StarRocks order
        assert [u.uid for u in users] == wanted
        assert all(len(page) <= batch_size for page in pages)
        both = set(uids[::2]) & set(uids[::3])
        assert {u.uid: u for u in users}["1"] == TaskUser("1", "comic", b)  # smallest project, task id
        assert all(u.task_id == b for u in users if u.uid in both)
    everything = [u for page in _read_all(_reader(mysql, 3), UserQuery("task_data", [a, b])) for u in page]
    assert {u.uid: u for u in everything}["7"].project == "comic"  # hour 5's row counts without --hour


def test_a_case_insensitive_uid_column_is_refused_not_silently_misread(mysql):
    from later_read.clients.starrocks import UserQuery
    from later_read.errors import StarRocksError

    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute(TASK_DATA + " CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cur.executemany(
            "INSERT INTO task_data VALUES (%s, %s, %s, %s, %s)",
            [("t", uid, "novel", 1, "b") for uid in ("B", "a", "c")],
        )
        conn.commit()
    with pytest.raises(StarRocksError, match="binary collation"):
        _read_all(_reader(mysql, 10), UserQuery("task_data", ["t"]))


def _seed_hours(mysql, rows) -> None:
    from later_read_sandbox.seed import DDL

    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute(DDL.format(table="task_data"))
        cur.executemany("INSERT INTO task_data VALUES (%s, %s, %s, %s, %s)", rows)
        conn.commit()


def test_pages_come_with_the_uids_that_have_an_earlier_hour_whatever_the_page_size(mysql):
    """`pages()` asks for each task id's next page and the next page's earlier-hour lookup before it hands a
    page on; the pages and their earlier uids are still exactly the definition's, in every page size (the
    first page smaller, pages of one, pages larger than the data)."""
    import asyncio

    from later_read.clients.starrocks import FIRST_PAGE_ROWS, UserQuery

    a, b = "04-026-20261123-r0gdua", "04-026-20261123-qk79ub"
    hours = {f"u{n:05d}": n % 24 for n in range(1300)}  # each uid's hour under task a
    rows = [(a, uid, "novel", hour, "b") for uid, hour in hours.items()]
    rows += [(b, uid, "comic", 21, "b") for uid in list(hours)[::7]]  # every 7th also at hour 21 under task b
    rows += [(b, uid, "comic", 3, "b") for uid in list(hours)[::11]]  # every 11th also at hour 3 under task b
    _seed_hours(mysql, rows)
    by_hour: dict[str, set[int]] = defaultdict(set)
    for _, uid, _, hour, _ in rows:
        by_hour[uid].add(hour)
    at_21 = sorted(uid for uid, found in by_hour.items() if 21 in found)
    earlier = {uid for uid in at_21 if min(by_hour[uid]) < 21}

    async def pages(reader):
        return [(page, found) async for page, found in reader.pages(UserQuery("task_data", [a, b], hour=21))]

    for batch_size in (1, 3, 40, FIRST_PAGE_ROWS + 7, 5000):
        reader = _reader(mysql, batch_size)
        try:
            read = asyncio.run(pages(reader))
        finally:
            reader.close()
        assert [u.uid for page, _ in read for u in page] == at_21
        assert all(len(page) <= batch_size for page, _ in read)
        for page, found in read:
            assert found == {u.uid for u in page} & earlier


def test_a_read_stopped_early_leaves_no_result_behind_nor_a_connection_open(mysql):
    """A reader that stops after its first page leaves queries sent ahead: their connections are closed (when
    the read is closed, or when the client's connection is next used), so the next query reads its own
    result; reads one after the other keep the same few connections open on the server."""
    import asyncio

    from later_read.clients.starrocks import UserQuery

    a, b = "ta", "tb"
    _seed_hours(mysql, [(task, f"u{n:04d}", "novel", n % 3, "x") for n in range(60) for task in (a, b)])
    query = UserQuery("task_data", [a, b], hour=2)
    wanted = [f"u{n:04d}" for n in range(60) if n % 3 == 2]

    def connections() -> int:
        with mysql.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", [mysql.database])
            return int(cur.fetchone()[0]) - 1  # not this one

    async def scenario(reader):
        pages = reader.pages(query)
        first, _ = await pages.__anext__()
        await pages.aclose()  # stopped after one page, the next pages and a lookup sent
        assert await reader.count(query) == len(wanted)
        unclosed = reader.pages(query)
        await unclosed.__anext__()  # not closed: the client's own connection holds a result unread
        assert await reader.count(query) == len(wanted)
        read = []
        for _ in range(4):
            read = [u.uid for page, _ in [x async for x in reader.pages(query)] for u in page]
        return first, read, connections()

    reader = _reader(mysql, 2)
    try:
        first, read, open_after = asyncio.run(scenario(reader))
    finally:
        reader.close()
    assert [u.uid for u in first] == wanted[:2] and read == wanted
    # The client's own, one per task id past the first and the lookup's; and the unclosed read's two lanes
    # past its first (that one was closed when `count` found its result unread), until it is collected.
    assert open_after == 5
    deadline = time.monotonic() + 5
    while connections() and time.monotonic() < deadline:  # the server ends a closed connection's thread soon after
        time.sleep(0.05)
    assert connections() == 0  # the unclosed read collected when its loop ended, the others closed with the client


def test_sandbox_up_notices_a_dead_simulator():
    """`sandbox up` polls Stack.dead(): a simulator killed under it is named with its exit code."""
    from types import SimpleNamespace

    from later_read_sandbox.simulator import SimulatorKnobs, SimulatorProcess
    from later_read_sandbox.stack import Stack

    stack = Stack()
    stack.redis = stack.mysql = stack.kafka = SimpleNamespace(child=None)  # external servers: nothing to watch
    with SimulatorProcess(SimulatorKnobs()) as sim:
        stack.simulator = sim
        assert stack.dead() is None
        sim.process.kill()
        sim.process.wait()
        assert stack.dead() == "simulator (exit code -9)"
