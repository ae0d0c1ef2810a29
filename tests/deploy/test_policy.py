"""Policy over the rendered overlays: what an SRE reviewer would otherwise check by hand."""

from __future__ import annotations

from typing import Any

import pytest

from .support import DEPLOYABLES, OVERLAYS, ident, of_kind, pod_specs, selects

Objects = dict[str, list[dict[str, Any]]]


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


# The services that call crm-customer over gRPC with their own signed identity (svc:<name>): LookupCustomers
# and ListBirthdays. Everything else between services travels through NATS.
CUSTOMER_CALLERS = ("crm-interaction", "crm-opportunity", "crm-service-ticket", "crm-notification", "crm-reporting")
# Who may call each service's gRPC port.
GRPC_CALLERS = {
    name: {"crm-gateway", *CUSTOMER_CALLERS} if name == "crm-customer" else {"crm-gateway"}
    for _, name, _ in DEPLOYABLES
    if name != "crm-gateway"
}
ALL_PORTS = "*"


def workload_ports(objects: list[dict[str, Any]]) -> dict[str, tuple[dict[str, str], dict[str, int]]]:
    """Workload name (app.kubernetes.io/name) → (pod labels, container port name → number)."""
    found = {}
    for _, labels, spec in pod_specs(objects):
        named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        found[labels["app.kubernetes.io/name"]] = (labels, named)
    return found


def rule_ports(rule: dict[str, Any], named: dict[str, int]) -> set[int | str]:
    """The port numbers a rule opens (named ports resolved against ``named``); no ``ports`` opens every port."""
    if not rule.get("ports"):
        return {ALL_PORTS}
    return {named.get(p["port"], p["port"]) for p in rule["ports"]}


def applying(objects: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    """The rules of ``direction`` ("ingress" or "egress") of every NetworkPolicy that selects ``labels``."""
    return [
        rule
        for policy in of_kind(objects, "NetworkPolicy")
        if direction.capitalize() in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get(direction, [])
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_only_nats_their_database_and_telemetry(rendered: Objects, overlay: str) -> None:
    """A service's pod peers are crm-nats, its own database and, for the five that look customers up,
    crm-customer on its gRPC port only. No other service, no other database; the gateway reaches every
    service but no other part's database."""
    objects = rendered[overlay]
    workloads = workload_ports(objects)
    customer_grpc = workloads["crm-customer"][1]["grpc"]
    for _, name, _ in DEPLOYABLES:
        peers: dict[str | None, set[int | str]] = {}
        for rule in applying(objects, workloads[name][0], "egress"):
            if name != "crm-gateway":
                assert rule.get("to"), f"{overlay}: {name} has an egress rule to anywhere: {rule}"
            for peer in rule.get("to", []):
                if "podSelector" not in peer or "namespaceSelector" in peer:
                    continue  # another namespace (DNS, telemetry) or an address block, not a CRM pod
                selector = peer["podSelector"]
                target = selector.get("matchLabels", {}).get("app.kubernetes.io/name")
                named = workloads[target][1] if target in workloads else {}
                peers.setdefault(target, set()).update(rule_ports(rule, named))
        databases = [p for p in peers if p and p.endswith("-db")]
        assert databases == [f"{name}-db"], f"{overlay}: {name} reaches databases {databases}"
        assert "crm-nats" in peers, f"{overlay}: {name} cannot reach NATS"
        if name == "crm-gateway":
            continue
        expected = {"crm-nats", f"{name}-db"} | ({"crm-customer"} if name in CUSTOMER_CALLERS else set())
        assert set(peers) == expected, f"{overlay}: {name} reaches {sorted(peers, key=str)}"
        if name in CUSTOMER_CALLERS:
            assert peers["crm-customer"] == {customer_grpc}, (
                f"{overlay}: {name} reaches crm-customer on {peers['crm-customer']}, not only gRPC {customer_grpc}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", sorted(GRPC_CALLERS))
def test_grpc_ports_admit_exactly_their_callers(rendered: Objects, overlay: str, name: str) -> None:
    """crm-customer's gRPC port admits exactly the gateway and the five services that look customers up; every
    other service's only the gateway. Nothing outside the namespace's CRM pods reaches a gRPC port."""
    objects = rendered[overlay]
    workloads = workload_ports(objects)
    labels, named = workloads[name]
    grpc = named["grpc"]
    admitted: set[str] = set()
    for rule in applying(objects, labels, "ingress"):
        ports = rule_ports(rule, named)
        if grpc not in ports and ALL_PORTS not in ports:
            continue
        for peer in rule.get("from", []):
            assert set(peer) == {"podSelector"}, f"{overlay}: {name} admits {peer} on gRPC"
            admitted |= {other for other, (pod, _) in workloads.items() if selects(peer["podSelector"], pod)}
    assert admitted == GRPC_CALLERS[name], f"{overlay}: {name} admits {sorted(admitted)} on gRPC"


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
