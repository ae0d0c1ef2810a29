"""Every rendered object is valid: built-in kinds against the Kubernetes schemas (kubernetes-validate
--strict), CloudNativePG and Prometheus Operator kinds against their CRDs' schemas (vendored in
deploy/schemas), skaffold.yaml against skaffold's own schema; the vendored files are unmodified."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .support import DEPLOY, DEPLOYABLES, OVERLAYS, REPO, SCHEMAS, ident, render, tool

KUBERNETES_VERSION = "1.37.0"
CRD_FILES = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_clusters.yaml",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "postgresql.cnpg.io_scheduledbackups.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def strict_crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema, made to reject unknown fields as `kubectl apply --validate=strict` does.

    The API server prunes fields a structural schema does not declare; a test must call them errors, so
    every object schema that lists properties and does not preserve unknown fields gets
    ``additionalProperties: false``.
    """
    crd = yaml.safe_load((SCHEMAS / "crds" / CRD_FILES[(api_version, kind)]).read_text(encoding="utf-8"))
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    # metadata is typed only as `object` in CRDs; the API server checks it like any ObjectMeta.
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    return schema


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Messages for every way ``obj`` breaks its CRD's schema."""
    validator = jsonschema.Draft7Validator(strict_crd_schema(obj["apiVersion"], obj["kind"]))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def kubernetes_validate(objects: list[dict[str, Any]], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the kubernetes-validate CLI in strict mode over one file per object."""
    binary = tool("kubernetes-validate", "pip install -c constraints.txt kubernetes-validate")
    files = []
    for index, obj in enumerate(objects):
        path = workdir / f"{index:03d}-{obj['kind']}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj), encoding="utf-8")
        files.append(str(path))
    return subprocess.run(
        [binary, "--strict", "--quiet", "-k", KUBERNETES_VERSION, *files], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_pass_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    builtin = [o for o in rendered[overlay] if (o["apiVersion"], o["kind"]) not in CRD_FILES]
    assert builtin
    result = kubernetes_validate(builtin, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crd_schemas(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    custom = [o for o in rendered[overlay] if (o["apiVersion"], o["kind"]) in CRD_FILES]
    assert custom
    failures = {ident(o): crd_errors(o) for o in custom}
    assert not {k: v for k, v in failures.items() if v}


def test_prod_runs_cloudnativepg_with_scheduled_backups(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for o in rendered["prod"]}
    assert {"Cluster", "ScheduledBackup", "ServiceMonitor", "PrometheusRule"} <= kinds
    clusters = {o["metadata"]["name"] for o in rendered["prod"] if o["kind"] == "Cluster"}
    backed_up = {o["spec"]["cluster"]["name"] for o in rendered["prod"] if o["kind"] == "ScheduledBackup"}
    assert clusters == {f"{name}-db" for _, name, _ in DEPLOYABLES} == backed_up


def test_dev_dumps_every_database_nightly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    cronjobs = {o["metadata"]["name"] for o in rendered["dev"] if o["kind"] == "CronJob"}
    assert cronjobs == {f"{name}-db-backup" for _, name, _ in DEPLOYABLES}


def test_every_rendered_kind_is_validated_by_something(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A kind with neither a Kubernetes schema nor a vendored CRD would pass unchecked."""
    for overlay, objects in rendered.items():
        for obj in objects:
            group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
            assert (obj["apiVersion"], obj["kind"]) in CRD_FILES or "." not in group or group.endswith(".k8s.io"), (
                f"{overlay}: {ident(obj)} ({obj['apiVersion']}) has no schema to validate against"
            )


def test_the_validators_reject_a_misspelt_field(tmp_path: Path) -> None:
    """The checks above would be worthless if unknown fields slipped through."""
    deployment = next(o for o in render(DEPLOY / "base") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"grpc": {"port": 50051}}
    assert kubernetes_validate([deployment], tmp_path).returncode != 0

    cluster = next(o for o in render(DEPLOY / "overlays" / "prod") if o["kind"] == "Cluster")
    cluster["spec"]["instance"] = 3
    assert any("instance" in message for message in crd_errors(cluster))


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_vendored_schemas_are_the_upstream_bytes() -> None:
    sources = (SCHEMAS / "SOURCES.md").read_text(encoding="utf-8")
    vendored = sorted(p for p in SCHEMAS.rglob("*") if p.suffix in {".json", ".yaml"})
    assert len(vendored) == 5
    for path in vendored:
        relative = path.relative_to(SCHEMAS).as_posix()
        row = next(line for line in sources.splitlines() if line.startswith(f"| {relative} |"))
        assert f"| {git_blob_id(path)} |" in row, f"{relative} differs from the upstream blob named in SOURCES.md"


def skaffold_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text(encoding="utf-8"))


def test_skaffold_yaml_matches_the_v4beta13_schema() -> None:
    config = skaffold_config()
    assert config["apiVersion"] == "skaffold/v4beta13"
    assert config["kind"] == "Config"
    schema = json.loads((SCHEMAS / "skaffold" / "v4beta13.json").read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert not errors
    broken = copy.deepcopy(config)
    broken["build"]["artifacts"][0]["dockerfil"] = "gateway/Dockerfile"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken)), "the schema must reject unknown fields"


def test_skaffold_builds_every_image_and_deploys_the_overlays() -> None:
    config = skaffold_config()
    wanted = {name: f"{directory}/Dockerfile" for directory, name, _ in DEPLOYABLES}
    built = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
    assert built == wanted
    assert all(a["context"] == "." for a in config["build"]["artifacts"])
    assert config["manifests"]["kustomize"]["paths"] == ["deploy/overlays/dev"]
    assert any(f["resourceName"] == "crm-gateway" and f["port"] == 8000 for f in config["portForward"])
    (prod,) = [p for p in config["profiles"] if p["name"] == "prod"]
    assert prod["manifests"]["kustomize"]["paths"] == ["deploy/overlays/prod"]
    # The prod profile must build the very names the prod overlay deploys, or skaffold would not swap tags.
    prod_images = {
        c["image"].rsplit(":", 1)[0]
        for o in render(DEPLOY / "overlays" / "prod")
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert {a["image"] for a in prod["build"]["artifacts"]} == prod_images
