"""Every environment variable a part's settings class reads is set in its pod, from its ConfigMaps or
a Secret, in both overlays; nothing in a pod names a CRM variable the part does not read (a typo
would silently leave the default in force); and the values parse and validate with the part's own
``crm_platform.config.load``."""

from __future__ import annotations

import base64
import dataclasses
import importlib
from typing import Any

import pytest

from .support import DEPLOY, DEPLOYABLES, OVERLAYS, in_ci, of_kind

# Read by a part but deliberately not set in a cluster, with the reason.
LEFT_TO_DEFAULT = {
    "CRM_DEMO_PASSWORD": "demo seeding is off in a cluster (CRM_DEMO=false), so no demo password exists",
}
# Prod renders no Secret; these stand in for the real values, in the shape each setting requires.
PLACEHOLDERS = {
    "uri": "postgresql://app:placeholder@db:5432/app",
    "CRM_PII_MASTER_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode(),
}


def settings_class(package: str) -> type:
    """``<package>.config.Settings``; skipped (failed under CI) while the part is not installed."""
    try:
        return importlib.import_module(f"{package}.config").Settings  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        if in_ci() or exc.name not in {package, f"{package}.config"}:
            raise
        pytest.skip(f"{package}.config is not installed yet ({exc}); run `make install`")


def settings_variables(package: str) -> list[str]:
    """What the part reads, through crm_platform.config.env_var_names."""
    from crm_platform.config import env_var_names

    return env_var_names(settings_class(package))


def pod_environment(objects: list[dict[str, Any]], name: str, overlay: str) -> dict[str, tuple[str, str]]:
    """Variable → (where it comes from, value) for the main container of Deployment ``name``.

    Prod renders no Secret (they are created out of band, deploy/README.md "Secrets"): there a secret's
    value is a placeholder as long as the README lists the Secret.
    """
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == name]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    # CloudNativePG writes <cluster>-app for every Cluster it runs.
    cnpg_app_secrets = {f"{c['metadata']['name']}-app" for c in of_kind(objects, "Cluster")}
    found: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in config_maps, f"{name}: ConfigMap {ref} is not rendered"
        found.update({key: (f"ConfigMap {ref}", value) for key, value in config_maps[ref]["data"].items()})
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            assert "valueFrom" not in variable, f"{name}: {variable['name']} comes from neither ConfigMap nor Secret"
            found[variable["name"]] = ("literal", variable["value"])
        elif ref["name"] in secrets:
            data = secrets[ref["name"]]["data"]
            assert ref["key"] in data, f"{name}: Secret {ref['name']} has no key {ref['key']}"
            found[variable["name"]] = (f"Secret {ref['name']}", base64.b64decode(data[ref["key"]]).decode())
        else:
            assert overlay == "prod", f"{overlay}: {name} reads Secret {ref['name']}, which is not rendered"
            if ref["name"] in cnpg_app_secrets:
                assert ref["key"] in {"uri", "username", "password", "host", "port", "dbname"}, ref
            else:
                assert f"`{ref['name']}`" in readme, f"deploy/README.md does not tell how to create {ref['name']}"
            placeholder = PLACEHOLDERS.get(ref["key"], "prod-placeholder-" + "x" * 40)
            found[variable["name"]] = (f"Secret {ref['name']}", placeholder)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("directory", "name", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_every_setting_is_set_from_a_configmap_or_secret(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, directory: str, name: str, package: str
) -> None:
    reads = settings_variables(package)
    assert reads, f"{package}.config.Settings reads no variable"
    present = pod_environment(rendered[overlay], name, overlay)
    missing = [v for v in reads if v not in present and v not in LEFT_TO_DEFAULT]
    assert not missing, f"{overlay}: {name} reads {missing} but its pod does not set them"
    literal = [v for v, (source, _) in present.items() if source == "literal" and v in reads]
    assert not literal, f"{overlay}: {name} sets {literal} inline; use its ConfigMap or a Secret"
    unknown = [v for v in present if (v.startswith("CRM_") or v.endswith("_DATABASE_URL")) and v not in reads]
    assert not unknown, f"{overlay}: {name} sets {unknown}, which {package} does not read"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("directory", "name", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_pod_settings_load_and_validate(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, directory: str, name: str, package: str
) -> None:
    """The part itself accepts its pod's environment (types, CRM_ENV, secret lengths, dev defaults in prod)."""
    from crm_platform.config import load

    cls = settings_class(package)
    environment = {k: value for k, (_, value) in pod_environment(rendered[overlay], name, overlay).items()}
    settings = load(cls, environment)
    assert settings.env == overlay


@pytest.mark.parametrize(("directory", "name", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_secret_settings_come_from_secrets(
    rendered: dict[str, list[dict[str, Any]]], directory: str, name: str, package: str
) -> None:
    """The settings a class marks secret are never in a ConfigMap."""
    secret = {
        f.metadata["crm_env"]
        for f in dataclasses.fields(settings_class(package))
        if f.metadata.get("crm_secret") and f.metadata["crm_env"] not in LEFT_TO_DEFAULT
    }
    assert "CRM_INTERNAL_SECRET" in secret
    for overlay in OVERLAYS:
        present = pod_environment(rendered[overlay], name, overlay)
        leaked = {v: present[v][0] for v in secret if not present[v][0].startswith("Secret ")}
        assert not leaked, f"{overlay}: {name} takes secrets from {leaked}"
