"""A topic that does not exist: `push` and `rerun` refuse it the same way (exit 3, one line) and neither
creates it, on a broker that would auto-create topics (as many production clusters do) and on one that
would not (the session broker). clients/kafka.py `check_topic` is the one rule; README "Running it in
production" and docs/design.md say why.

Before: the producer's metadata request asked the broker to create the topic, so the first command
failed ("Unknown topic or partition") and the next one found a topic with the broker's default settings.
"""

from __future__ import annotations

import pytest

from helpers import DATE, invoke, seed_day, servers, uid_of

HOUR = 3
NOW = "2026-11-23T03:05:00+08:00"  # inside HOUR's window: an explicit push of it is not refused


@pytest.fixture(scope="module")
def auto_creating_broker():
    """A private broker with auto.create.topics.enable=true (never the LATER_READ_TEST_KAFKA one)."""
    broker = servers.KafkaServer(auto_create_topics=True)
    try:
        broker.start()
    except servers.ServerUnavailable as error:
        broker.stop()
        pytest.fail(f"kafka (auto-create) unavailable: {error}", pytrace=False)
    yield broker
    broker.stop()


def topics(broker) -> set[str]:
    return set(broker.admin().list_topics(timeout=10).topics)


@pytest.mark.parametrize("which", ["auto-create on", "auto-create off"])
def test_push_and_rerun_refuse_a_missing_topic_alike_and_never_create_it(
    which, auto_creating_broker, kafka_server, redis_url, mysql, sim, make_config
):
    broker = auto_creating_broker if which == "auto-create on" else kafka_server
    seed_day(mysql, 24, hours=(HOUR,))
    topic = f"missing_{which.split()[-1]}_topic"
    config = str(
        make_config(kafka={"bootstrap_servers": broker.bootstrap, "topic": topic}, push={"wait_for_prewarm_seconds": 0})
    )
    commands = {
        "push": ["push", "--date", DATE, "--hour", str(HOUR), "--now", NOW, "--config", config],
        "rerun": ["rerun", uid_of(0), "--date", DATE, "--now", NOW, "--config", config],
    }
    lines = {}
    for name, argv in commands.items():
        for attempt in (1, 2):  # the second attempt finds no topic either: the first created nothing
            result = invoke(*argv)
            assert result.exit_code == 3, (name, attempt, result.output)
            lines[name, attempt] = result.stderr.strip().splitlines()[-1]
    assert set(lines.values()) == {
        (
            f"later-read: error: Kafka topic {topic!r} not usable (Broker: Unknown topic "
            "or partition); create it or fix [kafka] topic"
        )
    }
    assert topic not in topics(broker)
    assert sim.stats()["ab"]["calls"] == 0  # rerun stopped before its prewarm step, as push before work
