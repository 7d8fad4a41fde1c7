#!/usr/bin/env python3
"""Writes deploy/alerts/prometheusrule.yaml (a Prometheus Operator PrometheusRule) from the plain rule file.

The rules are written once, in deploy/alerts/later-read.rules.yml (what promtool checks and tests);
the PrometheusRule's `spec` is that file's content, so the two cannot drift. `--check` exits 1 with a
one-line fix when the committed manifest differs from what this would write (CI runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "alerts"
RULES, MANIFEST = ALERTS / "later-read.rules.yml", ALERTS / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from later-read.rules.yml by `python3 scripts/prometheusrule.py`: edit that file, not this.\n"
    "# For clusters running the Prometheus Operator: kubectl apply -f deploy/alerts/prometheusrule.yaml\n"
    "# (the `release` label must match your Prometheus's ruleSelector).\n"
)


def render() -> str:
    """The manifest text: metadata, and the rule file's groups as the spec."""
    spec = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "later-read", "labels": {"app.kubernetes.io/name": "later-read", "release": "prometheus"}},
        "spec": spec,
    }
    return HEADER + yaml.safe_dump(manifest, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not MANIFEST.exists() or MANIFEST.read_text(encoding="utf-8") != text:
            print(
                f"{MANIFEST} is out of date with {RULES.name}: run `python3 scripts/prometheusrule.py`", file=sys.stderr
            )
            return 1
        print(f"{MANIFEST.name}: in step with {RULES.name}")
        return 0
    if argv[1:]:
        print("usage: scripts/prometheusrule.py [--check]", file=sys.stderr)
        return 2
    MANIFEST.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
