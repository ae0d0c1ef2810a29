"""The hostile-input suite's stack, started once for the whole suite (see ``hostile_stack.py``).

Every part's database is PostgreSQL where the machine has one (always under ``CI=true``): it refuses what SQLite
stores without a word (a NUL in a text, a year past 9999, an integer past int64), so a route that lets such a
value through to its database shows as a 5xx here. Without PostgreSQL the suite runs on SQLite and says so."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from hostile_stack import Hostile, hostile_stack

from crm_testing.nats_server import port_open
from crm_testing.plugin import PG_HOST, PG_PORT, PostgresDatabases, in_ci

PARTS = ("GATEWAY", "CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING")


@pytest.fixture(scope="session")
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    env: dict[str, str] = {}
    if in_ci() or port_open(PG_HOST, PG_PORT):
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        env = {f"{part}_DATABASE_URL": databases.create() for part in PARTS}
    else:
        warnings.warn(
            f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: the hostile suite runs on SQLite", stacklevel=1
        )
    with hostile_stack(tmp_path_factory.mktemp("hostile"), env) as prepared:
        yield prepared
