"""The crontab and the Kubernetes manifests: they parse, fire at the right times, and run real commands."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from pathlib import Path
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml
from croniter import croniter

from helpers import CONFIG_PATH, ROOT, assert_cli_accepts, configmap_settings, manifests
from later_read.config.settings import load_settings

ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# The shipped deadlines (a change is a decision: update the comment in the manifest and these together).
STARTING_DEADLINES = {"prewarm": 3600, "push": 3300}
ACTIVE_DEADLINES = {"prewarm": 4 * 3600, "push": 50 * 60}  # 4 h (SIGTERM: exit 6); done before the next hour


def repo_settings():
    return load_settings(ROOT / "config.toml", environ={})


def crontab() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(environment lines, job -> (schedule, command)) of the repository's crontab."""
    env, jobs = {}, {}
    for line in (ROOT / "crontab").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if ENV_LINE.match(text):
            name, value = text.split("=", 1)
            env[name] = value
            continue
        fields = text.split(None, 5)
        schedule, command = " ".join(fields[:5]), fields[5]
        job = re.search(r"later-read (\w+)", command).group(1)
        assert job not in jobs, f"two crontab lines run {job}"
        jobs[job] = (schedule, command)
    return env, jobs


def fire_times(schedule: str, zone: ZoneInfo, start: dt.datetime, count: int) -> list[dt.datetime]:
    it = croniter(schedule, start)
    return [it.get_next(dt.datetime).astimezone(zone) for _ in range(count)]


# crontab -------------------------------------------------------------------------------------------
def test_crontab_zone_is_the_configured_timezone():
    env, jobs = crontab()
    assert set(jobs) == {"prewarm", "push"}
    assert env["CRON_TZ"] == repo_settings().timezone == "Asia/Shanghai"
    assert env["LATER_READ_CONFIG"] == CONFIG_PATH


def test_prewarm_fires_at_0001_every_day_in_the_zone():
    env, jobs = crontab()
    zone = ZoneInfo(env["CRON_TZ"])
    start = dt.datetime(2026, 11, 23, 12, 0, tzinfo=zone)
    times = fire_times(jobs["prewarm"][0], zone, start, 3)
    assert times == [dt.datetime(2026, 11, d, 0, 1, tzinfo=zone) for d in (24, 25, 26)]


def test_push_fires_at_minute_0_of_every_hour_in_the_zone():
    env, jobs = crontab()
    zone = ZoneInfo(env["CRON_TZ"])
    start = dt.datetime(2026, 11, 23, 0, 30, tzinfo=zone)
    times = fire_times(jobs["push"][0], zone, start, 48)
    first = dt.datetime(2026, 11, 23, 1, 0, tzinfo=zone)
    assert times == [first + dt.timedelta(hours=n) for n in range(48)]
    assert sorted({t.hour for t in times}) == list(range(24))


@pytest.mark.parametrize("job", ["prewarm", "push"])
def test_crontab_lines_use_flock_and_log_redirection(job):
    _, jobs = crontab()
    command = jobs[job][1]
    assert "%" not in command  # cron turns an unescaped % into a newline
    lock = f"/var/lock/later-read-{job}.lock"
    assert command.startswith(f"flock -n -E 75 {lock} later-read {job} ")
    assert f">> /var/log/later-read/{job}.log 2>&1" in command
    run = command[len(f"flock -n -E 75 {lock} ") : command.index(" >>")]
    assert_cli_accepts(shlex.split(run))
    mail = command[command.index("||") + 2 :]
    assert "LATER_READ_ALERT" in mail and "exited $?" in mail  # the one line cron mails on failure


# Kubernetes ----------------------------------------------------------------------------------------
def test_the_configmap_holds_a_valid_config_without_secrets(tmp_path):
    settings = configmap_settings(tmp_path)
    assert settings.timezone == repo_settings().timezone
    assert settings.starrocks.password == ""  # passwords come from the Secret
    assert "@" not in settings.redis.url
    # a pod has no node_exporter textfile directory
    assert settings.metrics.pushgateway_url == "http://pushgateway.monitoring.svc.cluster.local:9091"


@pytest.mark.parametrize("job, schedule", [("prewarm", "1 0 * * *"), ("push", "0 * * * *")])
def test_cronjob_has_the_required_fields(job, schedule):
    docs = manifests()
    cronjob = docs[("CronJob", f"later-read-{job}")]
    assert cronjob["apiVersion"] == "batch/v1"
    spec = cronjob["spec"]
    assert spec["schedule"] == schedule == crontab()[1][job][0]  # the same times as the crontab
    assert spec["timeZone"] == repo_settings().timezone
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == STARTING_DEADLINES[job]
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 5)
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 2 and job_spec["activeDeadlineSeconds"] == ACTIVE_DEADLINES[job]
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["command"] == ["later-read", job, "--config", CONFIG_PATH]
    assert_cli_accepts(container["command"])
    for kind in ("cpu", "memory"):
        assert container["resources"]["requests"][kind]
    assert container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LATER_READ__STARROCKS__PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "later-read-secrets"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == str(Path(CONFIG_PATH).parent)
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert ("ConfigMap", volume["configMap"]["name"]) in docs


@pytest.mark.parametrize("job", ["prewarm", "push"])
def test_termination_grace_covers_the_jobs_shutdown_grace(job, tmp_path):
    pod = manifests()[("CronJob", f"later-read-{job}")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for settings in (repo_settings(), configmap_settings(tmp_path)):
        if job == "prewarm":
            needed = settings.prewarm.grace_seconds
        else:  # after the grace, the push waits for Kafka's delivery reports before it marks users
            needed = settings.push.grace_seconds + settings.push.flush_timeout_seconds
        assert pod["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("job", ["prewarm", "push"])
def test_a_retry_after_a_crash_runs_and_only_hopeless_exits_fail_the_job(job, tmp_path):
    """A kill -9 / OOM kill (exit 137) is retried; the retry waits out the dead run's lock within its
    own lock wait and, for the push, marks what the dead run delivered before sending the rest."""
    job_spec = manifests()[("CronJob", f"later-read-{job}")]["spec"]["jobTemplate"]["spec"]
    rules = job_spec["podFailurePolicy"]["rules"]
    failing = {code for rule in rules if rule["action"] == "FailJob" for code in rule["onExitCodes"]["values"]}
    # bad input; a live run held the lock through the whole wait; (push) an hour's users expired: a retry
    # would find the hour final and exit 0, hiding it. A lost lock (8) is retried like a crash.
    assert failing == ({2, 5, 7} if job == "push" else {2, 5})
    assert any(
        rule["action"] == "Ignore" and {"type": "DisruptionTarget", "status": "True"} in rule.get("onPodConditions", [])
        for rule in rules
    )
    assert job_spec["backoffLimit"] >= 2
    for settings in (repo_settings(), configmap_settings(tmp_path)):
        lock = settings.lock
        assert lock.wait_seconds > lock.ttl_seconds  # a dead holder's lock expires inside the wait: no 5
        # every retry may first wait for a dead holder's lock: the deadline leaves room for that
        assert job_spec["activeDeadlineSeconds"] > job_spec["backoffLimit"] * 2 * lock.wait_seconds


# The versions deploy/README.md names: timeZone is GA from 1.27 (the oldest supported), podFailurePolicy GA
# from 1.31 (beta and on by default before); the newest schema kubernetes-validate ships catches removals.
K8S_VERSIONS = ["1.27", "1.31", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schema(version):
    """Every document in deploy/*.yaml against Kubernetes' own OpenAPI schema (offline, strict: an
    unknown or misspelled field fails too)."""
    checked, problems = [], []
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                checked.append(doc["kind"])
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    problems.append(
                        f"{path.name} {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}"
                    )
    if problems:  # outside the except block: one line each, not the schema jsonschema would print
        pytest.fail(f"not valid on Kubernetes {version}: " + "; ".join(problems), pytrace=False)
    assert sorted(checked) == ["ConfigMap", "CronJob", "CronJob"]


def test_the_push_deadline_ends_before_the_next_hour():
    spec = manifests()[("CronJob", "later-read-push")]["spec"]
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 3600
    assert spec["startingDeadlineSeconds"] < 3600


CONTROLLER_PERIOD_SECONDS = 10  # how often the CronJob controller looks at a CronJob (Kubernetes docs)


@pytest.mark.parametrize("folder", ["deploy", "deploy/sharded"])
def test_no_start_is_skipped_by_the_controller_and_none_falls_after_the_next_schedule(folder):
    """startingDeadlineSeconds far above the controller's 10 s period (a deadline of that order skips runs,
    kubernetes/kubernetes#86647) and below the schedule's period (a late start never comes after the next
    scheduled one; at most one missed start counted)."""
    cronjobs = [doc for (kind, _), doc in manifests(folder).items() if kind == "CronJob"]
    assert len(cronjobs) == 2
    for cronjob in cronjobs:
        spec, job = cronjob["spec"], cronjob["metadata"]["labels"]["app.kubernetes.io/component"]
        zone = ZoneInfo(spec["timeZone"])
        first, second = fire_times(spec["schedule"], zone, dt.datetime(2026, 11, 23, 12, 0, tzinfo=zone), 2)
        period = (second - first).total_seconds()
        deadline = spec["startingDeadlineSeconds"]
        assert deadline == STARTING_DEADLINES[job]
        assert 6 * CONTROLLER_PERIOD_SECONDS <= deadline < period


def sharded() -> dict[str, dict]:
    docs = manifests("deploy/sharded")
    assert sorted(docs) == [("CronJob", "later-read-prewarm-sharded"), ("CronJob", "later-read-push-sharded")]
    return {doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc for doc in docs.values()}


@pytest.mark.parametrize("job", ["prewarm", "push"])
def test_one_failing_shard_neither_fails_nor_stops_the_others(job):
    job_spec = sharded()[job]["spec"]["jobTemplate"]["spec"]
    [container] = job_spec["template"]["spec"]["containers"]
    shards = int({e["name"]: e.get("value") for e in container["env"]}["LATER_READ__SHARDS__COUNT"])
    assert job_spec["completionMode"] == "Indexed" and job_spec["completions"] == job_spec["parallelism"] == shards
    assert job_spec["backoffLimitPerIndex"] == 2  # each shard's own retries, as the unsharded job's backoffLimit
    assert job_spec["maxFailedIndexes"] == shards - 1  # stopped early only when no shard is left working
    assert "backoffLimit" not in job_spec  # a Job-wide limit would count every shard's failures together
    rules = {rule["action"]: set(rule["onExitCodes"]["values"]) for rule in job_spec["podFailurePolicy"]["rules"]}
    # bad config fails all; a held lock (and, for the push, an expired hour) fails its shard only
    assert rules == {"FailJob": {2}, "FailIndex": {5, 7} if job == "push" else {5}}


# backoffLimitPerIndex and maxFailedIndexes: alpha in 1.28 (off by default), beta and on by default in 1.29,
# GA in 1.33; kubernetes-validate ships schemas 1.25 to its newest.
SHARDED_VERSIONS = ["1.29", "1.33", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", SHARDED_VERSIONS)
def test_the_sharded_manifests_validate_where_their_fields_exist(version):
    problems = []
    for job, doc in sharded().items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{job}: {'.'.join(map(str, exc.path))}: {exc.message}")
    if problems:
        pytest.fail(f"not valid on Kubernetes {version}: " + "; ".join(problems), pytrace=False)


# docs/alerting.md ----------------------------------------------------------------------------------
ALERT_CALL = re.compile(r"""(?:alert\(\s*log,\s*|AlertLimiter\(\s*)["']([a-z_]+\.[a-z_]+)["']""")


def test_every_alert_line_in_the_code_is_documented():
    names = set()
    for path in (ROOT / "later_read").rglob("*.py"):
        names |= set(ALERT_CALL.findall(path.read_text(encoding="utf-8")))
    assert {"push.cache_miss", "prewarm.interrupted"} <= names  # the pattern still finds them
    doc = (ROOT / "docs" / "alerting.md").read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert not missing, f"docs/alerting.md does not describe {missing}"
