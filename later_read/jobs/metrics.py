"""Prometheus metrics for the batch jobs: written once at the end of each run, never scraped live.

A cron job is gone before any scrape, so the run's numbers go to the node_exporter textfile collector
(`[metrics] textfile_dir/later_read_<job>.prom`, written whole by files.atomic_file) and/or a Pushgateway
(`[metrics] pushgateway_url`, `pushadd` with grouping key `job="later_read_<job>"`), whichever is configured.

Metrics of job `<job>` (prewarm, push); no uid, date or hour label, so the series count stays fixed (the
ledger's hours are counted per verdict, six series, never one per hour):

    later_read_<job>_users_total                       counter  users the runs looked at
    later_read_<job>_outcomes_total{outcome}           counter  per outcome (rec, sent, miss, ...)
    later_read_<job>_failures_total{reason}            counter  failed users per reason
    later_read_<job>_duration_seconds                  gauge    the last run's wall time
    later_read_<job>_last_run_timestamp_seconds        gauge    when the last run ended, whatever its status
    later_read_<job>_last_status{status}               gauge    1 for the last run's status, 0 for the others
    later_read_<job>_last_success_timestamp_seconds    gauge    when the last *successful* run ended
    later_read_<job>_service_calls_total{service}      counter  calls to ab / rec / material (saving.py)
    later_read_<job>_service_peak_qps{service}         gauge    the last run's most calls in one second
    later_read_push_peak_calls_saved                   gauge    the old real-time flow's calls for the
                                                                hour's users minus the push's own calls
    later_read_push_expired_users_total                counter  users never sent because their hour's
                                                                window closed first (the ledger's expired)
    later_read_push_hours{verdict}                     gauge    the shard's hours that started in the last
                                                                24 h per `day` verdict (done, expired, late,
                                                                due, upcoming, untracked) after the last run,
                                                                from the day ledger (ledger.verdicts)
    later_read_push_late_minutes                       gauge    how late (minutes after the hour's start) the
                                                                last run began the latest hour it pushed

A run is a success when it went through every user (status `ok`, `failures`, or the push's `expired`:
it ran, and the users its hours' windows left behind are counted). Counters are cumulative:
each run adds its counts to the previous write's totals (the textfile, else the Pushgateway), and the last
success timestamp is carried forward. Any failure here logs one `metrics.failed` warning and the job goes
on. Why these choices: docs/design.md, "Metrics".
"""

from __future__ import annotations

import logging
import re
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, pushadd_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from later_read.config.settings import Settings
from later_read.core.schedule import VERDICTS
from later_read.core.scope import WHOLE, Shard
from later_read.files import write_atomic
from later_read.jobs.summary import Summary
from later_read.log import event, get_logger
from later_read.redact import redact

log = get_logger("metrics")

SUCCESS_STATUSES = ("ok", "failures", "expired")
KNOWN_STATUSES = ("ok", "failures", "expired", "service_down", "interrupted", "lock_lost", "error")  # Summary.status
READ_TIMEOUT_SECONDS = 5.0
PUSH_TIMEOUT_SECONDS = 10.0

# Previous values: (sample name, label value or "") -> value
Previous = dict[tuple[str, str], float]


def record_job(settings: Settings, job: str, summary: Summary, shard: Shard = WHOLE) -> None:
    """Write the run's metrics to every configured sink; never raises (one warning line instead).
    A shard's run writes its own file / Pushgateway group (`_shard<K>of<N>`), so shards never
    overwrite each other's totals."""
    cfg = settings.metrics
    if not cfg.enabled:
        return
    name = _metric_job(job)
    try:
        previous = _read_previous(settings, name, shard)
        registry = build_registry(name, summary, previous)
    except Exception as exc:  # noqa: BLE001 - metrics must never fail the job
        _failed("build", "-", exc, "this is a bug; the job itself is unaffected")
        return
    if cfg.textfile_dir:
        path = textfile_path(settings, job, shard)
        try:
            write_atomic(path, generate_latest(registry))  # never through a planted temp-name link
        except Exception as exc:  # noqa: BLE001
            _failed("textfile", str(path), exc, "check that [metrics] textfile_dir exists and is writable")
    if cfg.pushgateway_url:
        try:
            pushadd_to_gateway(
                cfg.pushgateway_url,
                job=f"later_read_{name}{_group(shard)}",
                registry=registry,
                timeout=PUSH_TIMEOUT_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001
            _failed(
                "pushgateway",
                redact(cfg.pushgateway_url),
                exc,
                "check [metrics] pushgateway_url and that the Pushgateway is up",
            )


def textfile_path(settings: Settings, job: str, shard: Shard = WHOLE) -> Path:
    """`<textfile_dir>/later_read_<job>[_shard<K>of<N>].prom` (node_exporter reads only *.prom)."""
    return Path(settings.metrics.textfile_dir) / f"later_read_{_metric_job(job)}{_group(shard)}.prom"


def _group(shard: Shard) -> str:
    """What a shard's metric file and Pushgateway job end with: `_shard<K>of<N>`, "" unsharded."""
    return shard.suffix.replace(":", "_")


def build_registry(name: str, summary: Summary, previous: Previous | None = None) -> CollectorRegistry:
    """A fresh registry holding this run's metrics (totals = previous + this run)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_RunCollector(name, summary, previous or {}))
    return registry


class _RunCollector:
    """Yields the metric families of one finished run (a custom collector: no `_created` samples,
    which would claim the cumulative counters were reset at every run)."""

    def __init__(self, name: str, summary: Summary, previous: Previous) -> None:
        self.name, self.summary, self.previous = name, summary, previous

    def collect(self) -> Iterable[Metric]:
        p, s = f"later_read_{self.name}", self.summary
        counts = {k: v for k, v in s.counts.items() if k != "users"}
        yield self._counter(f"{p}_users", "Users the runs looked at.", None, {"": s.counts.get("users", 0)})
        yield self._counter(f"{p}_outcomes", "Users per outcome, summed over runs.", "outcome", counts)
        yield self._counter(f"{p}_failures", "Failed users per reason, summed over runs.", "reason", dict(s.failures))
        ended = s.finished_at or time.time()
        yield GaugeMetricFamily(f"{p}_duration_seconds", "Wall time of the last run.", value=s.duration_seconds)
        yield GaugeMetricFamily(f"{p}_last_run_timestamp_seconds", "End of the last run (any status).", value=ended)
        status = GaugeMetricFamily(f"{p}_last_status", "1 for the last run's status.", labels=["status"])
        for name in dict.fromkeys((*KNOWN_STATUSES, s.status)):
            status.add_metric([name], 1.0 if name == s.status else 0.0)
        yield status
        yield from self._services(p)
        if self.name == "push":
            yield from self._ledger(p)
        success = (
            ended if s.status in SUCCESS_STATUSES else self.previous.get((f"{p}_last_success_timestamp_seconds", ""))
        )
        if success is not None:
            yield GaugeMetricFamily(
                f"{p}_last_success_timestamp_seconds",
                "End of the last run that went through every user (status ok or failures).",
                value=success,
            )

    def _services(self, p: str) -> Iterable[Metric]:
        """Calls per service (cumulative), the last run's peak QPS, and the push's peak calls saved."""
        services = self.summary.services
        yield self._counter(
            f"{p}_service_calls",
            "Calls to each downstream service, summed over runs.",
            "service",
            {name: stats.get("calls", 0) for name, stats in services.items()},
        )
        peak = GaugeMetricFamily(
            f"{p}_service_peak_qps", "The last run's most calls started in one second.", labels=["service"]
        )
        for name, stats in sorted(services.items()):
            peak.add_metric([name], float(stats.get("peak_qps", 0)))
        yield peak
        if "peak_calls_saved" in self.summary.extra:
            yield GaugeMetricFamily(
                f"{p}_peak_calls_saved",
                "Calls the old real-time flow would have made "
                "at push time for this hour's users (A/B + recommend + material per "
                "user), minus the calls this push made.",
                value=float(self.summary.extra["peak_calls_saved"]),
            )

    def _ledger(self, p: str) -> Iterable[Metric]:
        """The push's day-ledger metrics: expired users (cumulative, always written, so `increase()` sees
        the first expiry), the hours per verdict and the lateness of the last run; a run that ended before
        reading the ledger (an error) carries the previous values forward."""
        s = self.summary
        yield self._counter(
            f"{p}_expired_users",
            "Users of push hours never sent because the hour's window closed first, summed over runs.",
            None,
            {"": s.counts.get("expired", 0)},
        )
        verdicts = s.extra.get("hours_by_verdict")
        if verdicts is None:
            verdicts = {label: v for (name, label), v in self.previous.items() if name == f"{p}_hours"}
        if verdicts:
            hours = GaugeMetricFamily(
                f"{p}_hours",
                "The shard's hours that started in the last 24 h, per "
                "verdict (later-read day's words) after the last run.",
                labels=["verdict"],
            )
            for verdict in VERDICTS:
                hours.add_metric([verdict], float(verdicts.get(verdict, 0)))
            yield hours
        late = s.extra.get("late_minutes", self.previous.get((f"{p}_late_minutes", "")))
        if late is not None:
            yield GaugeMetricFamily(
                f"{p}_late_minutes",
                "Minutes after its start that the last run began the "
                "latest hour it pushed (0: on time, or it pushed none).",
                value=float(late),
            )

    def _counter(self, name: str, doc: str, label: str | None, run: dict) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=[label] if label else None)
        sample = f"{name}_total"
        carried = {value for (sample_name, value) in self.previous if sample_name == sample}
        for value in sorted(set(run) | carried):
            total = self.previous.get((sample, value), 0.0) + float(run.get(value, 0))
            family.add_metric([value] if label else [], total)
        return family


def _read_previous(settings: Settings, name: str, shard: Shard = WHOLE) -> Previous:
    """The values of the last write: from the textfile if configured, else from the Pushgateway."""
    if settings.metrics.textfile_dir:
        path = textfile_path(settings, name, shard)
        try:
            return parse_previous(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}  # the first run (or the directory is missing: the write will say so)
        except (OSError, ValueError) as exc:
            _failed("textfile-read", str(path), exc, "counters restart from this run's values")
            return {}
    url = settings.metrics.pushgateway_url.rstrip("/")
    url = (url if "://" in url else f"http://{url}") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_SECONDS) as response:
            return parse_previous(response.read().decode("utf-8"), job=f"later_read_{name}{_group(shard)}")
    except (OSError, ValueError) as exc:
        _failed("pushgateway-read", redact(url), exc, "counters restart from this run's values")
        return {}


def parse_previous(text: str, job: str | None = None) -> Previous:
    """Samples of a text exposition keyed by (name, the one label value or "").

    With `job`, only samples of that Pushgateway group (its `job` label) are kept.
    """
    found: Previous = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if job is not None and labels.pop("job", None) != job:
                continue
            labels.pop("instance", None)
            if len(labels) <= 1:
                found[(sample.name, next(iter(labels.values()), ""))] = sample.value
    return found


def _metric_job(job: str) -> str:
    """A job name usable inside a metric name: lower case, [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", job.lower())


def _failed(sink: str, where: str, exc: BaseException, fix: str) -> None:
    event(
        log,
        "metrics.failed",
        logging.WARNING,
        sink=sink,
        where=where,
        error=f"{type(exc).__name__}: {exc}"[:200],
        fix=fix,
    )
