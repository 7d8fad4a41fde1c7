#!/usr/bin/env python3
"""Names each Prometheus alert's firing and silent cases in the promtool unit tests, and fails when an
alert of the rule file lacks either (an alert nobody saw fire, or nobody saw stay quiet, is untested).

Usage: alert_cases.py RULES.yml TEST.yml...   (scripts/alert-tests runs it after `promtool test rules`)
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import yaml


def alerts_of(rules_path: Path) -> list[str]:
    groups = yaml.safe_load(rules_path.read_text(encoding="utf-8"))["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def cases(test_paths: list[Path]) -> dict[str, dict[str, list[str]]]:
    """alert -> {"fires": [...], "silent": [...]}, each case as `<file>: <test name> (at <eval_time>)`."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"fires": [], "silent": []})
    for path in test_paths:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in test.get("alert_rule_test", []):
                kind = "fires" if check.get("exp_alerts") else "silent"
                found[check["alertname"]][kind].append(f"{path.name}: {test['name']} (at {check['eval_time']})")
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: alert_cases.py RULES.yml TEST.yml...", file=sys.stderr)
        return 2
    alerts, found = alerts_of(Path(argv[1])), cases([Path(p) for p in argv[2:]])
    missing = []
    for alert in alerts:
        print(alert)
        for kind in ("fires", "silent"):
            for case in found[alert][kind]:
                print(f"  {kind:<6} {case}")
            if not found[alert][kind]:
                missing.append(f"{alert} has no {'firing' if kind == 'fires' else 'silent'} case")
    unknown = sorted(set(found) - set(alerts))
    problems = missing + [f"tests name {name}, which no rule defines" for name in unknown]
    for problem in problems:
        print(f"alert_cases: {problem}: add one to deploy/alerts/tests/", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
