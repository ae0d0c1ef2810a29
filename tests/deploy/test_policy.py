"""Policy over the rendered overlays: what an SRE reviewer would otherwise check by hand."""

from __future__ import annotations

from typing import Any

import pytest

from .support import DEPLOYABLES, OVERLAYS, ident, of_kind

Objects = dict[str, list[dict[str, Any]]]


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_part_is_a_deployment(rendered: Objects, overlay: str) -> None:
    names = {d["metadata"]["name"] for d in of_kind(rendered[overlay], "Deployment")}
    assert names == {name for _, name, _ in DEPLOYABLES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_have_probes_and_resources(rendered: Objects, overlay: str) -> None:
    for deployment in of_kind(rendered[overlay], "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            where = f"{ident(deployment)} container {container['name']}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert probe in container, f"{where} lacks {probe}"
            if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "service":
                grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    assert container[probe].get("grpc", {}).get("port") == grpc_port, f"{where}: {probe} not gRPC"
            else:
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{ident(deployment)}: {kind} incomplete"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_hardened(rendered: Objects, overlay: str) -> None:
    workloads = pod_specs(rendered[overlay])
    assert len(workloads) >= len(DEPLOYABLES)
    for name, _, spec in workloads:
        assert spec.get("automountServiceAccountToken") is False, f"{name}: token automounted"
        assert spec["securityContext"].get("runAsNonRoot") is True, name
        assert spec["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container.get("securityContext", {})
            where = f"{name} container {container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_accounts_do_not_automount_tokens(rendered: Objects, overlay: str) -> None:
    for account in of_kind(rendered[overlay], "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, ident(account)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_pdb_and_an_hpa(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in of_kind(objects, "PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
        assert len(pdbs) == 1, f"{ident(deployment)}: {len(pdbs)} PodDisruptionBudgets"
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
        hpas = [h for h in of_kind(objects, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"] == target]
        assert len(hpas) == 1, f"{ident(deployment)}: {len(hpas)} HorizontalPodAutoscalers"
        hpa = hpas[0]
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


def test_prod_keeps_three_replicas_and_scales_consumers_on_lag(rendered: Objects) -> None:
    objects = rendered["prod"]
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["replicas"] >= 3, ident(deployment)
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 3, ident(hpa)
    lag_scaled = {
        h["metadata"]["name"]
        for h in of_kind(objects, "HorizontalPodAutoscaler")
        for m in h["spec"]["metrics"]
        if m["type"] == "External" and m["external"]["metric"]["name"] == "crm_consumer_lag"
    }
    assert {"crm-notification", "crm-reporting", "crm-interaction"} <= lag_scaled


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_network_policy_admitting_its_ports(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    policies = of_kind(objects, "NetworkPolicy")
    pods = {name: (labels, spec) for name, labels, spec in pod_specs(objects)}
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        backends = [(labels, spec) for labels, spec in pods.values() if selects({"matchLabels": selector}, labels)]
        assert backends, f"{ident(service)} selects no pod"
        labels, spec = backends[0]
        named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        admitted: set[int] = set()
        for policy in policies:
            if "Ingress" in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], labels):
                for rule in policy["spec"].get("ingress", []):
                    assert rule.get("from"), f"{ident(policy)} admits ingress from anywhere"
                    for port in rule.get("ports", []):
                        admitted.add(named.get(port["port"], port["port"]))
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = named.get(target, target)
            assert number in admitted, f"{overlay}: {ident(service)} port {port['name']} has no NetworkPolicy"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_denies_by_default(rendered: Objects, overlay: str) -> None:
    defaults = [
        p
        for p in of_kind(rendered[overlay], "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert defaults and all(not p["spec"].get("ingress") and not p["spec"].get("egress") for p in defaults)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_only_nats_their_database_and_telemetry(rendered: Objects, overlay: str) -> None:
    """Services talk to each other only through NATS; each reaches its own database, no other."""
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered[overlay], "NetworkPolicy")}
    for _, name, _ in DEPLOYABLES:
        egress = policies[name]["spec"]["egress"]
        peers = [
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            for rule in egress
            for peer in rule.get("to", [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        ]
        databases = [p for p in peers if p and p.endswith("-db")]
        assert databases == [f"{name}-db"], f"{name} reaches databases {databases}"
        assert "crm-nats" in peers
        if name != "crm-gateway":
            assert set(peers) == {"crm-nats", f"{name}-db"}, f"{name} reaches {peers}"


def test_prod_pins_every_image(rendered: Objects) -> None:
    for name, _, spec in pod_specs(rendered["prod"]):
        for container in spec["containers"] + spec.get("initContainers", []):
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{name}: {image} has no tag"
            assert tag != "latest", f"{name}: {image} uses latest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_latest_tags_anywhere_explicitly(rendered: Objects, overlay: str) -> None:
    for name, _, spec in pod_specs(rendered[overlay]):
        for container in spec["containers"] + spec.get("initContainers", []):
            assert not container["image"].endswith(":latest"), f"{name}: {container['image']}"


def test_prod_renders_no_secret(rendered: Objects) -> None:
    """Real credentials are created out of band (deploy/README.md "Secrets"), never committed."""
    assert not of_kind(rendered["prod"], "Secret")


def test_ingress_terminates_tls(rendered: Objects) -> None:
    for overlay in OVERLAYS:
        (ingress,) = of_kind(rendered[overlay], "Ingress")
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
        assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "crm-gateway"


def test_nats_is_a_cluster_of_three(rendered: Objects) -> None:
    for overlay in OVERLAYS:
        (nats,) = [s for s in of_kind(rendered[overlay], "StatefulSet") if s["metadata"]["name"] == "crm-nats"]
        assert nats["spec"]["replicas"] == 3
        (config,) = [c for c in of_kind(rendered[overlay], "ConfigMap") if c["metadata"]["name"] == "crm-nats"]
        conf = config["data"]["nats.conf"]
        assert "jetstream" in conf and all(f"crm-nats-{i}.crm-nats-headless:6222" in conf for i in range(3))
