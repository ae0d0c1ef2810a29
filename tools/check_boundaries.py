"""Lint rule: a service imports only crm_platform, crm (protos) and itself — never another service or the
gateway; the gateway imports no service package (style.md, convention 9). Exits 1 naming each breach."""

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


def imported_roots(path: Path) -> set[str]:
    """Top-level package names ``path`` imports."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def main() -> int:
    """Check every source file of every deployable."""
    breaches = []
    deployables = [(p, p.name) for p in (ROOT / "services").glob("*/src/crm_*")]
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
