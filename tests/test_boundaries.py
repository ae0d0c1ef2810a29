"""The package boundaries of style.md hold in the tree (tools/check_boundaries.py, also run by ``make lint``), and
the domain rule sees an import of grpc, sqlalchemy or nats in a domain module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_boundaries", ROOT / "tools" / "check_boundaries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_keeps_its_boundaries() -> None:
    assert _checker().main() == 0


def test_a_domain_module_importing_the_database_layer_is_a_breach(tmp_path: Path) -> None:
    checker = _checker()
    checker.ROOT = tmp_path
    package = tmp_path / "crm_example"
    (package / "domain").mkdir(parents=True)
    (package / "domain" / "rules.py").write_text("from sqlalchemy import select\nimport json\n")
    (package / "domain.py").write_text("import grpc.aio\n")
    (package / "store.py").write_text("import sqlalchemy\n")  # the store may
    assert sorted(checker.domain_breaches(package)) == [
        "crm_example/domain.py (a domain module) imports grpc",
        "crm_example/domain/rules.py (a domain module) imports sqlalchemy",
    ]
