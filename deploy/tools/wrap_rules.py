"""Wrap the plain Prometheus rule files of deploy/alerts into PrometheusRule objects.

The plain files stay the source (promtool checks and unit-tests them); the Prometheus Operator only
reads PrometheusRule objects, and kustomize cannot lift a file into a resource's ``spec``, so this
writes ``deploy/alerts/prometheusrule.yaml``. ``--check`` exits 1 when that file is out of date.

    python deploy/tools/wrap_rules.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ALERTS = Path(__file__).resolve().parent.parent / "alerts"
OUTPUT = ALERTS / "prometheusrule.yaml"
HEADER = "# Generated from crm.rules.yml by `make deploy-rules` (deploy/tools/wrap_rules.py): do not edit.\n"


def render() -> str:
    """The PrometheusRule documents for every ``*.rules.yml`` in deploy/alerts."""
    documents = []
    for source in sorted(ALERTS.glob("*.rules.yml")):
        rules = yaml.safe_load(source.read_text(encoding="utf-8"))
        documents.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": source.name.removesuffix(".rules.yml"),
                    # kube-prometheus-stack's default ruleSelector matches its release label.
                    "labels": {"prometheus": "crm", "role": "alert-rules"},
                },
                "spec": {"groups": rules["groups"]},
            }
        )
    body = yaml.safe_dump_all(documents, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if prometheusrule.yaml is out of date")
    args = parser.parse_args()
    wanted = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != wanted:
            print(f"{OUTPUT} is out of date: run `make deploy-rules`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
