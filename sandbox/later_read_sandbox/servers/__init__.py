"""Real local servers for tests, the demo and benchmarks: redis-server, MariaDB and a KRaft Kafka broker.

MariaDB stands in for StarRocks (same MySQL protocol); the Kafka broker is Apache Kafka itself, run with
`java` from Maven Central jars. One module per server (`redis`, `mariadb`, `kafka`) over the process
layer (`process`). Each kind can instead point at an already-running server through an environment
variable (`LATER_READ_TEST_REDIS_URL`, `LATER_READ_TEST_MYSQL`, `LATER_READ_TEST_KAFKA`); the factories
`redis_server()`, `mariadb_server()` and `kafka_server()` read them. An external server is never
started, stopped nor restarted here.

Command line: `later-read sandbox fetch-kafka` fills the Kafka jar cache; `later-read sandbox servers
[KIND ...]` runs servers until Ctrl-C and prints the variables that point the tests at them.
"""

from later_read_sandbox.servers.kafka import (
    CACHE_ENV,
    KAFKA_POM,
    KafkaServer,
    ensure_java,
    ensure_kafka_classpath,
    kafka_cache_dir,
    kafka_server,
    kafka_version,
)
from later_read_sandbox.servers.mariadb import MariaDBServer, MySQLDatabase, TlsFiles, mariadb_server
from later_read_sandbox.servers.process import (
    KAFKA_ENV,
    MYSQL_ENV,
    REDIS_ENV,
    ChildProcess,
    LocalServer,
    ServerUnavailable,
    death_signal_setter,
    find_program,
    free_port,
    port_open,
    python_env,
    require_program,
    started_servers,
    wait_until,
)
from later_read_sandbox.servers.redis import RedisServer, redis_server

FACTORIES = {"redis": redis_server, "mariadb": mariadb_server, "kafka": kafka_server}

__all__ = [
    "CACHE_ENV",
    "FACTORIES",
    "KAFKA_ENV",
    "KAFKA_POM",
    "MYSQL_ENV",
    "REDIS_ENV",
    "ChildProcess",
    "KafkaServer",
    "LocalServer",
    "MariaDBServer",
    "MySQLDatabase",
    "RedisServer",
    "ServerUnavailable",
    "TlsFiles",
    "death_signal_setter",
    "ensure_java",
    "ensure_kafka_classpath",
    "find_program",
    "free_port",
    "kafka_cache_dir",
    "kafka_server",
    "kafka_version",
    "mariadb_server",
    "port_open",
    "python_env",
    "redis_server",
    "require_program",
    "started_servers",
    "wait_until",
]
