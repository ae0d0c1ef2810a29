"""Who holds which key, over the rendered overlays: each part's own PII master keys, the staff-contact key in the
gateway and the notification service only, and JetStream's encryption key from a Secret, never from a file."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from .support import DEPLOY, DEPLOYABLES, OVERLAYS, ident, of_kind, pod_specs

Objects = dict[str, list[dict[str, Any]]]

STAFF_CONTACT_SECRET = "crm-staff-contact"
STAFF_CONTACT_HOLDERS = {"Deployment/crm-gateway", "Deployment/crm-notification"}
NATS_KEY_SECRET = "crm-nats-encryption"


def is_secret(rendered_name: str, name: str) -> bool:
    """Whether ``rendered_name`` is Secret ``name`` (the dev overlay's generator appends a content hash)."""
    return re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", rendered_name) is not None


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def secret_references(spec: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(Secret name, key or None for all of it) of every way a pod spec can reach a Secret."""
    found: list[tuple[str, str | None]] = []
    for container in containers(spec):
        for variable in container.get("env", []):
            if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                found.append((ref["name"], ref["key"]))
        found += [(s["secretRef"]["name"], None) for s in container.get("envFrom", []) if "secretRef" in s]
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            found.append((volume["secret"]["secretName"], None))
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                found.append((source["secret"]["name"], None))
    return found


def secret_value(objects: list[dict[str, Any]], name: str, key: str) -> str:
    (secret,) = [s for s in of_kind(objects, "Secret") if is_secret(s["metadata"]["name"], name)]
    return base64.b64decode(secret["data"][key]).decode()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_part_seals_with_master_keys_of_its_own(rendered: Objects, overlay: str) -> None:
    """Every container of every part takes CRM_PII_MASTER_KEYS from crm-<part>-pii and nowhere else, and its
    ConfigMap names the active key: a leaked key of one part opens nothing another part sealed."""
    objects = rendered[overlay]
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    config_maps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}
    for _, name, _ in DEPLOYABLES:
        spec = deployments[name]["spec"]["template"]["spec"]
        for container in containers(spec):
            where = f"{overlay}: {name} container {container['name']}"
            found = [v for v in container.get("env", []) if v["name"] == "CRM_PII_MASTER_KEYS"]
            assert len(found) == 1, f"{where} sets CRM_PII_MASTER_KEYS {len(found)} times"
            ref = found[0].get("valueFrom", {}).get("secretKeyRef", {})
            own = is_secret(ref.get("name", ""), f"{name}-pii") and ref.get("key") == "CRM_PII_MASTER_KEYS"
            assert own, f"{where} takes CRM_PII_MASTER_KEYS from {ref or 'no Secret'}"
        assert config_maps[name]["data"]["CRM_PII_ACTIVE_KEY_ID"] == "k1", f"{overlay}: {name}"
        assert all("CRM_PII_MASTER_KEYS" not in c.get("data", {}) for c in config_maps.values())
    for workload, _, spec in pod_specs(objects):
        own = f"{workload.split('/', 1)[1]}-pii"
        foreign = [ref for ref, _ in secret_references(spec) if re.fullmatch(r"crm-[a-z-]+-pii(-[a-z0-9]{10})?", ref)]
        assert all(is_secret(ref, own) for ref in foreign), f"{overlay}: {workload} reads PII keys {foreign}"


def test_dev_gives_every_part_a_different_master_key(rendered: Objects) -> None:
    keys: dict[str, str] = {}
    for _, name, _ in DEPLOYABLES:
        spec = secret_value(rendered["dev"], f"{name}-pii", "CRM_PII_MASTER_KEYS")
        for entry in spec.split(","):
            kid, _, material = entry.partition(":")
            assert len(base64.b64decode(material)) == 32, f"{name}: key {kid} is not 32 bytes"
            assert material not in keys, f"{name} shares a master key with {keys.get(material)}"
            keys[material] = name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_notification_hold_the_staff_contact_key(rendered: Objects, overlay: str) -> None:
    """Staff e-mail and mobile travel sealed from the gateway to crm-notification; no other workload (and no
    ConfigMap) may hold the key that opens them."""
    objects = rendered[overlay]
    holders = {
        workload
        for workload, _, spec in pod_specs(objects)
        if any(is_secret(ref, STAFF_CONTACT_SECRET) for ref, _ in secret_references(spec))
    }
    assert holders == STAFF_CONTACT_HOLDERS, f"{overlay}: {sorted(holders)} hold {STAFF_CONTACT_SECRET}"
    for workload, _, spec in pod_specs(objects):
        for container in containers(spec):
            names = {v["name"] for v in container.get("env", [])}
            if workload not in STAFF_CONTACT_HOLDERS:
                assert "CRM_STAFF_CONTACT_KEY" not in names, f"{overlay}: {workload} sets CRM_STAFF_CONTACT_KEY"
                continue
            where = f"{overlay}: {workload} container {container['name']}"
            found = [v for v in container.get("env", []) if v["name"] == "CRM_STAFF_CONTACT_KEY"]
            assert len(found) == 1, f"{where} sets CRM_STAFF_CONTACT_KEY {len(found)} times"
            ref = found[0].get("valueFrom", {}).get("secretKeyRef", {})
            held = is_secret(ref.get("name", ""), STAFF_CONTACT_SECRET) and ref.get("key") == "CRM_STAFF_CONTACT_KEY"
            assert held, f"{where} takes CRM_STAFF_CONTACT_KEY from {ref or 'no Secret'}"
    for config_map in of_kind(objects, "ConfigMap"):
        assert "CRM_STAFF_CONTACT_KEY" not in config_map.get("data", {}), ident(config_map)


def jetstream_block(conf: str) -> str:
    """The body of nats.conf's ``jetstream { … }`` block."""
    match = re.search(r"^\s*jetstream\s*[:=]?\s*\{", conf, re.MULTILINE)
    assert match, "nats.conf has no jetstream block"
    depth, start = 1, match.end()
    for index in range(start, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[index], 0)
        if depth == 0:
            return conf[start:index]
    raise AssertionError("nats.conf: the jetstream block is not closed")


def settings_of(block: str) -> dict[str, str]:
    """``name: value`` (or ``name = value``) lines of a block, comments dropped."""
    found = {}
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if match := re.fullmatch(r"(\w+)\s*[:=]\s*(.+?)\s*;?", line):
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jetstream_encrypts_at_rest_with_a_key_from_a_secret(rendered: Objects, overlay: str) -> None:
    """nats.conf sets a cipher and takes the key from an environment variable that the Secret
    crm-nats-encryption fills; the key is never a literal in the ConfigMap."""
    objects = rendered[overlay]
    (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "crm-nats"]
    conf = config["data"]["nats.conf"]
    jetstream = settings_of(jetstream_block(conf))
    assert jetstream.get("cipher") == "chachapoly", f"{overlay}: jetstream cipher is {jetstream.get('cipher')}"
    keys = {k: v for k, v in jetstream.items() if k in {"key", "encryption_key", "ek"}}
    assert len(keys) == 1, f"{overlay}: jetstream sets {sorted(keys)} as its key"
    variables = {}
    for option in ("key", "encryption_key", "ek", "prev_encryption_key", "prev_key", "prev_ek"):
        if option in jetstream:
            reference = re.fullmatch(r"\$([A-Za-z_]\w*)", jetstream[option])
            assert reference, f"{overlay}: jetstream {option} is a literal, not an environment variable"
            variables[option] = reference.group(1)
    for variable in variables.values():
        # A variable defined in the file itself would win over the environment (and be the literal key).
        assert not re.search(rf"^\s*{variable}\s*[:=]", conf, re.MULTILINE), f"{overlay}: nats.conf defines {variable}"
    (nats,) = [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "crm-nats"]
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container.get("env", [])}
    for option, variable in variables.items():
        assert variable in env, f"{overlay}: crm-nats does not set ${variable} ({option})"
        ref = env[variable].get("valueFrom", {}).get("secretKeyRef")
        assert ref and is_secret(ref["name"], NATS_KEY_SECRET), f"{overlay}: ${variable} is not from {NATS_KEY_SECRET}"
    assert not container.get("envFrom"), f"{overlay}: crm-nats takes variables from a whole ConfigMap or Secret"
    if overlay == "dev":
        key = secret_value(objects, NATS_KEY_SECRET, env[variables["key"]]["valueFrom"]["secretKeyRef"]["key"])
        assert len(key) >= 32, "JetStream's key should be at least 32 bytes (nats-server's recommendation)"
        # nats-server parses a variable's value as configuration (`pk=<value>`): it must read as a plain string.
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", key), "JS_KEY must start with a letter (deploy/README.md)"
    else:
        assert f"`{NATS_KEY_SECRET}`" in (DEPLOY / "README.md").read_text(encoding="utf-8")
