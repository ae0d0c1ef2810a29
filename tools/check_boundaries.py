"""Lint rule: a service imports only crm_platform, crm (protos) and itself — never another service or the
gateway; the gateway imports no service package (style.md, convention 9); a service's domain (``domain.py`` or
the ``domain/`` package) imports neither grpc, sqlalchemy nor nats (convention 1). Exits 1 naming each breach."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = {
    "crm_customer",
    "crm_interaction",
    "crm_opportunity",
    "crm_ticket",
    "crm_notification",
    "crm_reporting",
}
FORBIDDEN_EVERYWHERE = SERVICE_PACKAGES | {"crm_gateway"}
FORBIDDEN_IN_DOMAIN = {"grpc", "sqlalchemy", "nats"}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names ``path`` imports."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def domain_breaches(package_dir: Path) -> list[str]:
    """What the domain modules of the service at ``package_dir`` import of :data:`FORBIDDEN_IN_DOMAIN`."""
    modules = [package_dir / "domain.py", *(package_dir / "domain").rglob("*.py")]
    return [
        f"{path.relative_to(ROOT)} (a domain module) imports {root}"
        for path in modules
        if path.is_file()
        for root in sorted(imported_roots(path) & FORBIDDEN_IN_DOMAIN)
    ]


def main() -> int:
    """Check every source file of every deployable."""
    breaches = []
    deployables = [(p, p.name) for p in (ROOT / "services").glob("*/src/crm_*")]
    for package_dir, _ in deployables:
        breaches += domain_breaches(package_dir)
    deployables.append((ROOT / "gateway" / "src" / "crm_gateway", "crm_gateway"))
    for package_dir, own in deployables:
        for path in package_dir.rglob("*.py"):
            for root in imported_roots(path) & (FORBIDDEN_EVERYWHERE - {own}):
                breaches.append(f"{path.relative_to(ROOT)} imports {root}")
    for path in (ROOT / "libs").rglob("*.py"):
        if "crm/" in str(path.relative_to(ROOT / "libs")):
            continue
        for root in imported_roots(path) & FORBIDDEN_EVERYWHERE:
            breaches.append(f"{path.relative_to(ROOT)} imports {root}")
    print(*breaches, sep="\n") if breaches else print("package boundaries hold")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
