"""The Prometheus alert rules, checked by promtool itself (scripts/alert-tests): the rule file parses,
each alert's unit tests pass (a firing and a silent case each), and the PrometheusRule matches the file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "alerts"


def test_promtool_checks_and_unit_tests_every_alert():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "alert-tests")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED" not in result.stdout and result.stdout.count("SUCCESS") >= 2
    groups = yaml.safe_load((ALERTS / "later-read.rules.yml").read_text(encoding="utf-8"))["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        block = result.stdout.split(f"\n{rule['alert']}\n", 1)[1]
        assert block.lstrip().startswith(("fires", "silent")), rule["alert"]


def test_the_prometheusrule_spec_is_the_rule_file():
    manifest = yaml.safe_load((ALERTS / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"] == yaml.safe_load((ALERTS / "later-read.rules.yml").read_text(encoding="utf-8"))


def test_the_documented_prometheus_alerts_are_the_rule_files():
    doc = (ROOT / "docs" / "alerting.md").read_text(encoding="utf-8")
    groups = yaml.safe_load((ALERTS / "later-read.rules.yml").read_text(encoding="utf-8"))["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert f"`{rule['alert']}`" in doc, f"docs/alerting.md does not describe {rule['alert']}"
