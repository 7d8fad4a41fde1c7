"""The downstream simulator, driven over real HTTP on loopback (no mocks).

One SimulatorProcess serves the module; each test restores the default knobs, applies its own and resets
the counters, the way other test modules are expected to share one simulator.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import socket
import statistics
import time
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from later_read_sandbox.simulator import (
    KnobError,
    Oracle,
    ServiceKnobs,
    SimulatorKnobs,
    SimulatorProcess,
    knobs_from_options,
    serve,
    simulator_command,
)
from later_read_sandbox.simulator.stats import EndpointStats
from later_read_sandbox.simulator.timer import SpinClock, TimerfdClock, precise_clock

AB, REC, MATERIAL = "/v1/ab/assign", "/v1/rec/get", "/v1/material/get"
REQUIRED = {
    AB: ("value", "trace_id"),
    REC: ("rec_id", "rec_type", "material_id"),
    MATERIAL: ("material_id", "title", "content", "cover_url", "deeplink"),
}


class Answer(NamedTuple):
    status: int | None  # None: the client timed out
    body: bytes
    seconds: float

    def json(self) -> Any:
        return orjson.loads(self.body)


def ab_call(uid: str, default: str = "0") -> tuple[str, dict]:
    return AB, {"uid": uid, "project": "novel", "layer": "later_read", "default": default}


def rec_call(uid: str) -> tuple[str, dict]:
    return REC, {"uid": uid, "project": "novel", "scene": "pre-warming-process", "trace_id": "t"}


def material_call(material_id: str, uid: str = "u") -> tuple[str, dict]:
    return MATERIAL, {"uid": uid, "rec_id": "r", "rec_type": "book", "material_id": material_id}


def post_all(
    url: str, calls: list[tuple[str, dict]], connections: int = 50, timeout: float = 10.0, pace: float = 0.0
) -> list[Answer]:
    """POST every call with at most `connections` in flight; `pace` spaces the starts (seconds)."""

    async def run() -> list[Answer]:
        limit = asyncio.Semaphore(connections)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

            async def one(index: int, path: str, body: dict) -> Answer:
                await asyncio.sleep(index * pace)
                async with limit:
                    return await _post(session, url + path, body, timeout)

            return await asyncio.gather(*(one(n, path, body) for n, (path, body) in enumerate(calls)))

    return asyncio.run(run())


async def _post(session: aiohttp.ClientSession, url: str, body: dict, timeout: float) -> Answer:
    started = time.perf_counter()
    try:
        async with session.post(
            url,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            data = await response.read()
            return Answer(response.status, data, time.perf_counter() - started)
    except TimeoutError:
        return Answer(None, b"", time.perf_counter() - started)


def share(answers: list[Answer], predicate) -> float:
    return sum(1 for answer in answers if predicate(answer)) / len(answers)


def uids(count: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{n}" for n in range(count)]


@pytest.fixture(scope="module")
def shared_sim():
    with SimulatorProcess() as process:
        yield process


@pytest.fixture
def sim(shared_sim: SimulatorProcess) -> SimulatorProcess:
    shared_sim.configure(**SimulatorKnobs().to_dict())
    shared_sim.reset()
    return shared_sim


def set_knobs(sim: SimulatorProcess, **changes: Any) -> None:
    sim.configure(**changes)
    sim.reset()


# Contracts -----------------------------------------------------------------------------------------
def test_answers_follow_the_contracts_and_the_local_oracle(sim):
    people = uids(300)
    ab = post_all(sim.url, [ab_call(uid) for uid in people])
    rec = post_all(sim.url, [rec_call(uid) for uid in people])
    for uid, ab_answer, rec_answer in zip(people, ab, rec, strict=False):
        expected = sim.expected(uid)
        assert ab_answer.status == 200 and ab_answer.json() == {
            "value": expected["ab_value"],
            "trace_id": expected["trace_id"],
        }
        assert (ab_answer.json()["value"] != "0") == expected["in_experiment"]
        if expected["has_rec"]:
            assert rec_answer.json() == {key: expected[key] for key in REQUIRED[REC]}
        else:
            assert (rec_answer.status, rec_answer.json()) == (200, {})
    with_rec = [uid for uid in people if sim.expected(uid)["has_rec"]]
    cards = post_all(sim.url, [material_call(sim.expected(uid)["material_id"], uid) for uid in with_rec])
    for uid, card in zip(with_rec, cards, strict=False):
        expected = sim.expected(uid)
        assert card.status == (200 if expected["material_found"] else 404)
        if card.status == 200:
            assert set(card.json()) == set(REQUIRED[MATERIAL])
            assert card.json()["material_id"] == expected["material_id"]


def test_http_errors_unknown_path_bad_json_missing_uid_wrong_method(sim):
    connection = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    for method, path, body, status in [
        ("POST", "/v1/nope", b"{}", 404),
        ("POST", AB, b"{not json", 400),
        ("POST", AB, b"[1]", 400),
        ("POST", REC, b'{"project": "novel"}', 400),
        ("POST", MATERIAL, b'{"uid": "u"}', 400),
        ("GET", AB, None, 405),
        ("GET", "/_sim/nope", None, 404),
        ("POST", AB, orjson.dumps(ab_call("k")[1]), 200),
    ]:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()  # one keep-alive connection carries all of them
        assert (method, path, response.status) == (method, path, status)
        assert "error" in orjson.loads(response.read()) or status == 200
    connection.close()
    assert sim.stats()["ab"]["by_status"] == {"200": 1, "400": 2}


def test_a_request_split_across_packets_and_connection_close(sim):
    body = orjson.dumps(ab_call("split")[1])
    head = f"POST {AB} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", int(sim.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(head[:20].encode())
        time.sleep(0.05)
        sock.sendall(head[20:].encode() + body[:5])
        time.sleep(0.05)
        sock.sendall(body[5:])
        reply = b""
        while chunk := sock.recv(65536):  # the server closes after answering
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in reply
    assert orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["trace_id"] == sim.expected("split")["trace_id"]


# Faults --------------------------------------------------------------------------------------------
def test_5xx_rate_and_the_stats_agree(sim):
    set_knobs(sim, ab={"error_5xx_rate": 0.3})
    answers = post_all(sim.url, [ab_call(uid) for uid in uids(2000)])
    failed = sum(1 for answer in answers if answer.status in (500, 503))
    assert abs(failed / 2000 - 0.3) <= 0.03
    assert {answer.status for answer in answers} == {200, 500, 503}
    stats = sim.stats()
    assert stats["ab"]["calls"] == 2000 and stats["rec"]["calls"] == 0
    assert stats["ab"]["by_status"].get("500", 0) + stats["ab"]["by_status"].get("503", 0) == failed
    assert stats["ab"]["by_fault"]["5xx"] == failed


def test_a_retry_of_a_failed_call_can_succeed(sim):
    set_knobs(sim, rec={"error_5xx_rate": 0.5})
    statuses = {answer.status for answer in post_all(sim.url, [rec_call("same-uid")] * 40, connections=1)}
    assert {200, 500, 503} <= statuses


def test_429_rate(sim):
    set_knobs(sim, rec={"error_429_rate": 0.2})
    answers = post_all(sim.url, [rec_call(uid) for uid in uids(2000)])
    limited = sum(1 for answer in answers if answer.status == 429)
    assert abs(limited / 2000 - 0.2) <= 0.03
    assert sim.stats()["rec"]["by_status"]["429"] == limited


@pytest.mark.parametrize("path", [AB, REC, MATERIAL])
def test_malformed_rate_gives_unparsable_bodies_and_missing_fields(sim, path):
    service = {AB: "ab", REC: "rec", MATERIAL: "material"}[path]
    set_knobs(sim, **{service: {"malformed_rate": 0.4}}, no_rec_ratio=0, not_found_ratio=0)
    calls = {AB: ab_call, REC: rec_call, MATERIAL: lambda uid: material_call("m-7", uid)}[path]
    answers = post_all(sim.url, [calls(uid) for uid in uids(1000)])
    assert all(answer.status == 200 for answer in answers)
    unparsable = missing = 0
    for answer in answers:
        try:
            body = answer.json()
        except orjson.JSONDecodeError:
            unparsable += 1
            continue
        missing += not all(key in body for key in REQUIRED[path])
    assert abs((unparsable + missing) / 1000 - 0.4) <= 0.04
    assert abs(unparsable - missing) <= 1  # the two kinds alternate
    assert sim.stats()[service]["by_fault"]["malformed"] == unparsable + missing


def test_timeout_rate_holds_requests_past_the_client_timeout(sim):
    set_knobs(sim, ab={"timeout_rate": 0.25}, timeout_hold_seconds=0.6)
    answers = post_all(sim.url, [ab_call(uid) for uid in uids(400)], connections=100, timeout=0.25)
    timed_out = sum(1 for answer in answers if answer.status is None)
    held = sim.stats()["ab"]["by_fault"]["timeout"]
    assert abs(held / 400 - 0.25) <= 0.05
    # Every held request timed out. A few more may have: when the host freezes this test's own loop for
    # longer than the timeout, an answer read late after it times out too (CI: 111 for 107 held, 30-50 %
    # steal). Those are the client's lateness, not the simulator's, hence a one-sided bound (5 % of calls).
    assert held <= timed_out <= held + 20
    assert all(answer.status == 200 for answer in answers if answer.status is not None)


def test_a_held_request_is_answered_normally_after_the_hold(sim):
    set_knobs(sim, rec={"timeout_rate": 1.0}, timeout_hold_seconds=0.2)
    answers = post_all(sim.url, [rec_call(uid) for uid in uids(20)], timeout=5)
    assert all(answer.status in (200, 404) and answer.seconds >= 0.19 for answer in answers)


def test_latency_and_jitter(sim):
    set_knobs(sim, ab={"latency_ms": 30}, rec={"latency_ms": 10, "jitter_ms": 40})
    fixed = [answer.seconds * 1000 for answer in post_all(sim.url, [ab_call(u) for u in uids(200)], 20)]
    assert min(fixed) >= 30  # latency_ms is a floor; how far above it is a figure (benchmarks/)
    spread = [answer.seconds * 1000 for answer in post_all(sim.url, [rec_call(u) for u in uids(300)], 20)]
    deciles = statistics.quantiles(spread, n=10)
    assert min(spread) >= 10
    assert deciles[-1] - deciles[0] >= 20  # uniform 0..40 ms: about 32 ms between p10 and p90


# Hostile replies -------------------------------------------------------------------------------------
def test_hostile_replies_a_huge_field_for_a_stable_share_of_the_uids(sim):
    set_knobs(sim, ab={"hostile_ratio": 0.3, "hostile_field": "trace_id", "hostile_field_bytes": 1_048_576})
    calls = uids(200)
    answers = post_all(sim.url, [ab_call(uid) for uid in calls], timeout=30)
    oracle = Oracle(sim.knobs)
    hostile = {uid for uid in calls if oracle.fraction("hostile", uid) < 0.3}
    assert 0 < len(hostile) < len(calls)
    for uid, answer in zip(calls, answers, strict=False):
        trace_id = answer.json()["trace_id"]
        assert trace_id == ("x" * 1_048_576 if uid in hostile else sim.expected(uid)["trace_id"])
        assert answer.json()["value"] == sim.expected(uid)["ab_value"]  # the rest of the reply is as usual
    assert sim.stats()["ab"]["by_fault"]["hostile"] == len(hostile)


def test_hostile_replies_a_padded_reply_and_a_chosen_text(sim):
    set_knobs(
        sim,
        rec={"hostile_ratio": 1.0, "hostile_reply_bytes": 300_000},
        no_rec_ratio=0,
        material={"hostile_ratio": 1.0, "hostile_field": "title", "hostile_text": 'x\n"LATER_READ_ALERT'},
        not_found_ratio=0,
    )
    [rec] = post_all(sim.url, [rec_call("u1")])
    assert len(rec.body) == 300_000
    assert {k: v for k, v in rec.json().items() if k != "padding"} == {
        k: sim.expected("u1")[k] for k in ("rec_id", "rec_type", "material_id")
    }
    [card] = post_all(sim.url, [material_call("m-7")])
    assert card.json()["title"] == 'x\n"LATER_READ_ALERT'
    assert card.json()["deeplink"] == "reader://book/m-7"


def test_a_trickled_reply_outlasts_a_short_timeout_and_arrives_whole_with_a_long_one(sim):
    set_knobs(sim, ab={"hostile_ratio": 1.0, "trickle_bytes_per_second": 100})  # ~1.4 s a reply
    [short] = post_all(sim.url, [ab_call("u1")], timeout=0.3)
    assert short.status is None  # the client's deadline covers the whole reply, not each byte
    [whole] = post_all(sim.url, [ab_call("u1")], timeout=30)
    expected = sim.expected("u1")
    assert whole.status == 200 and whole.json() == {"value": expected["ab_value"], "trace_id": expected["trace_id"]}


def test_hostile_knobs_are_checked(sim):
    for change, words in [
        ({"ab": {"hostile_field": "title"}}, "ab.hostile_field must be one of value, trace_id"),
        ({"material": {"hostile_text": 3}}, "material.hostile_text must be a string"),
        ({"rec": {"hostile_ratio": 2}}, "between 0 and 1"),
        ({"rec": {"hostile_reply_bytes": -1}}, ">= 0"),
        ({"rec": {"hostile_field_bytes": 2**40}}, "rec.hostile_field_bytes must be <="),
    ]:
        with pytest.raises(KnobError, match=words):
            sim.configure(**change)


# Deterministic answers -----------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_in_experiment_ratio(sim, ratio):
    set_knobs(sim, in_experiment_ratio=ratio)
    answers = post_all(sim.url, [ab_call(uid, default="7") for uid in uids(2000)])
    inside = [answer.json()["value"] != "7" for answer in answers]
    assert abs(sum(inside) / 2000 - ratio) <= 0.03
    assert inside == [sim.expected(uid)["in_experiment"] for uid in uids(2000)]
    assert {answer.json()["value"] for answer in answers} == {"1", "7"}


def test_an_in_experiment_value_never_equals_the_default(sim):
    set_knobs(sim, in_experiment_ratio=1.0)
    answers = post_all(sim.url, [ab_call(uid, default="1") for uid in uids(50)])
    assert {answer.json()["value"] for answer in answers} == {"2"}


@pytest.mark.parametrize("style", ["empty", "404", "mixed"])
def test_no_rec_ratio_and_style(sim, style):
    set_knobs(sim, no_rec_ratio=0.3, no_rec_style=style)
    answers = post_all(sim.url, [rec_call(uid) for uid in uids(2000)])
    empty = share(answers, lambda a: a.status == 200 and a.json() == {})
    not_found = share(answers, lambda a: a.status == 404)
    assert abs(empty + not_found - 0.3) <= 0.03
    if style == "empty":
        assert not_found == 0
    elif style == "404":
        assert empty == 0
    else:
        assert abs(empty - 0.15) <= 0.03 and abs(not_found - 0.15) <= 0.03


def test_not_found_ratio(sim):
    set_knobs(sim, materials=2000, not_found_ratio=0.25)
    answers = post_all(sim.url, [material_call(f"m-{n}") for n in range(2000)])
    assert abs(share(answers, lambda a: a.status == 404) - 0.25) <= 0.03
    unknown = post_all(sim.url, [material_call(m) for m in ("m-2000", "m-01", "book-1", "m-")])
    assert [answer.status for answer in unknown] == [404] * 4
    set_knobs(sim, not_found_ratio=SimulatorKnobs().not_found_ratio)  # the default, 0.02
    answers = post_all(sim.url, [material_call(f"m-{n}") for n in range(2000)])
    assert abs(share(answers, lambda a: a.status == 404) - 0.02) <= 0.01


def test_materials_is_the_number_of_distinct_recommended_ids(sim):
    set_knobs(sim, materials=37, no_rec_ratio=0)
    answers = post_all(sim.url, [rec_call(uid) for uid in uids(2000)])
    assert {answer.json()["material_id"] for answer in answers} == {f"m-{n}" for n in range(37)}


def test_same_seed_same_answers_in_another_process_different_seed_different(sim):
    calls = [ab_call(uid) for uid in uids(300)] + [rec_call(uid) for uid in uids(300)]
    first = [answer.body for answer in post_all(sim.url, calls)]
    with SimulatorProcess(SimulatorKnobs(seed=1)) as twin:  # another process: another hash() salt
        assert [answer.body for answer in post_all(twin.url, calls)] == first
    set_knobs(sim, seed=2)
    other = [answer.body for answer in post_all(sim.url, calls)]
    assert sum(a != b for a, b in zip(first, other, strict=False)) > 550  # trace and rec ids all change


def test_the_fault_sequence_restarts_on_reset(sim):
    set_knobs(sim, ab={"error_5xx_rate": 0.3, "error_429_rate": 0.1})
    calls = [ab_call(uid) for uid in uids(500)]
    rounds = []
    for _ in range(2):
        sim.reset()
        rounds.append([answer.status for answer in post_all(sim.url, calls, connections=1)])
    assert rounds[0] == rounds[1]


# Control endpoints ---------------------------------------------------------------------------------
def test_reset_zeroes_every_counter(sim):
    post_all(sim.url, [ab_call("a"), rec_call("a"), material_call("m-1")])
    assert sim.stats()["ab"]["calls"] == 1
    sim.reset()
    for endpoint in ("ab", "rec", "material"):
        assert sim.stats()[endpoint] == {
            "calls": 0,
            "by_status": {},
            "distinct_uids": 0,
            "peak_qps": 0,
            "max_calls_per_uid": 0,
            "first_at": None,
            "last_at": None,
            "by_fault": {"none": 0, "5xx": 0, "429": 0, "timeout": 0, "malformed": 0, "shed": 0, "hostile": 0},
            "capacity": 0,
            "in_service": 0,
            "queued": 0,
            "max_queued": 0,
            "max_in_service": 0,
            "max_in_service_together": 0,
            "sojourn_p50_ms": 0.0,
            "sojourn_p99_ms": 0.0,
            "wait_p99_ms": 0.0,
            "late_p99_ms": 0.0,
        }
        assert sim.calls(endpoint) == {}


def test_per_uid_calls(sim):
    post_all(sim.url, [ab_call("u-a")] * 3 + [ab_call("u-b"), rec_call("u-a")])
    assert sim.calls("ab") == {"u-a": 3, "u-b": 1}
    assert sim.calls("rec") == {"u-a": 1}
    stats = sim.stats()
    assert (stats["ab"]["distinct_uids"], stats["ab"]["max_calls_per_uid"]) == (2, 3)
    with pytest.raises(RuntimeError, match="endpoint must be one of"):
        sim.calls("bogus")


def test_peak_qps_counts_replies_per_wall_clock_second():
    stats = EndpointStats()
    for now in (100.0, 100.5, 100.99, 101.0, 101.2, 103.7, 103.8, 103.9, 103.95):
        stats.completed(now)
    assert stats.peak_qps == 4  # 103.x holds four; 100.x three; 101.x two


def test_peak_qps(sim):
    started = time.perf_counter()
    post_all(sim.url, [rec_call(uid) for uid in uids(2000)])
    elapsed = time.perf_counter() - started
    # peak_qps counts per wall-clock second: a burst of `elapsed` seconds touches at most floor(elapsed) + 2
    # of them, so one of those holds at least 2000 / (floor(elapsed) + 2) replies, whatever the host's speed.
    assert 2000 / (math.floor(elapsed) + 2) <= sim.stats()["rec"]["peak_qps"] <= 2000


def test_config_update_is_partial_and_bad_changes_are_rejected(sim):
    sim.configure(ab={"error_5xx_rate": 0.3}, in_experiment_ratio=0.5)
    config = sim.config()
    assert config["ab"] == {**ServiceKnobs().to_dict(), "error_5xx_rate": 0.3}
    assert config["in_experiment_ratio"] == 0.5 and config["materials"] == 1000
    for change, words in [
        ({"ab": {"nope": 1}}, "unknown knob ab.nope"),
        ({"bogus": 1}, "unknown knob bogus"),
        ({"ab": {"error_5xx_rate": 1.5}}, "between 0 and 1"),
        ({"rec": {"latency_ms": -1}}, ">= 0"),
        ({"rec": {"error_5xx_rate": 0.6, "timeout_rate": 0.6}}, "more than 1"),
        ({"no_rec_style": "silent"}, "no_rec_style"),
        ({"materials": 0}, "materials"),
        ({"seed": "one"}, "seed"),
        ({"ab": 3}, "ab must be a JSON object"),
    ]:
        with pytest.raises(KnobError, match=words):
            sim.configure(**change)
    assert sim.config() == config  # a rejected change changes nothing


def test_config_endpoint_answers_400_with_a_message(sim):
    connection = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    connection.request("POST", "/_sim/config", body=b'{"rec": {"speed": 2}}')
    response = connection.getresponse()
    assert response.status == 400 and "unknown knob rec.speed" in orjson.loads(response.read())["error"]
    connection.close()


def test_knobs_round_trip_and_cli_flags_override_config_json():
    knobs = SimulatorKnobs(seed=4, ab=ServiceKnobs(latency_ms=5), no_rec_style="mixed")
    assert SimulatorKnobs.from_dict(knobs.to_dict()) == knobs
    merged = knobs_from_options(
        '{"ab": {"jitter_ms": 2, "latency_ms": 1}, "seed": 3}',
        {"seed": 9, "ab_latency_ms": 5.0, "rec_latency_ms": None},
    )
    assert (merged.seed, merged.ab.latency_ms, merged.ab.jitter_ms, merged.rec.latency_ms) == (9, 5.0, 2, 0)


# Entry points ----------------------------------------------------------------------------------------
def test_cli_help_ends_with_an_example_and_bad_config_exits_2():
    result = CliRunner().invoke(simulator_command, ["--help"])
    assert result.exit_code == 0
    assert result.output.rstrip().splitlines()[-3].strip().startswith("later-read sandbox simulator --port")
    result = CliRunner().invoke(simulator_command, ["--config-json", '{"ab": {"latency": 1}}'])
    assert result.exit_code == 2 and "unknown knob ab.latency" in result.output


def test_a_process_that_cannot_start_raises_with_its_output():
    with pytest.raises(RuntimeError, match="no_rec_style"):
        SimulatorProcess(SimulatorKnobs(no_rec_style="loud")).start()


def test_serve_in_the_current_loop():
    knobs = SimulatorKnobs(seed=3)

    async def run() -> Answer:
        async with await serve(knobs) as simulator, aiohttp.ClientSession() as session:
            return await _post(session, simulator.url + AB, ab_call("u9")[1], 5)

    answer = asyncio.run(run())
    assert answer.json()["trace_id"] == Oracle(knobs).expected("u9")["trace_id"]
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(serve(knobs, host="0.0.0.0"))


# The precise clock behind reply latency ---------------------------------------------------------------
@pytest.mark.parametrize("clock_class", [TimerfdClock, SpinClock])
def test_the_clock_never_fires_early_and_barely_late(clock_class):
    """Replies leave at their deadline, never before (latency_ms is a floor); cancelled ones never.
    How late they leave is a figure: benchmarks/simulator_clock.py."""

    async def measure() -> tuple[list[float], list[str]]:
        loop = asyncio.get_running_loop()
        clock, lateness, order, done = clock_class(loop), [], [], loop.create_future()
        start = time.monotonic()
        offsets = [0.005 + (i % 7) * 0.0013 for i in range(200)]

        def fired(deadline: float, name: str) -> None:
            lateness.append(time.monotonic() - deadline)
            order.append(name)
            if len(order) == len(offsets) - 1 and not done.done():
                done.set_result(None)

        handles = [clock.call_at(start + o, lambda d=start + o, n=str(i): fired(d, n)) for i, o in enumerate(offsets)]
        clock.cancel(handles[3])
        await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.02)
        clock.close()
        return lateness, order

    lateness, order = asyncio.run(measure())
    assert "3" not in order and len(order) == 199
    assert min(lateness) >= 0


def test_linux_gets_the_timerfd_clock_and_replies_are_never_early():
    """The timerfd clock (no spinning) is the one chosen on Linux; its CPU per reply is a figure:
    benchmarks/simulator_clock.py."""

    async def chosen() -> type:
        clock = precise_clock(asyncio.get_running_loop())
        clock.close()
        return type(clock)

    assert asyncio.run(chosen()) is TimerfdClock
    with SimulatorProcess(SimulatorKnobs(ab=ServiceKnobs(latency_ms=20))) as sim:
        answers = post_all(sim.url, [ab_call(uid) for uid in uids(300)], 50)
    assert all(answer.status == 200 and answer.seconds >= 0.02 for answer in answers)
