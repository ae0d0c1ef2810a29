"""Reporting rules without gRPC or a database: which branches' counts each scope may read."""

from __future__ import annotations

import pytest

from crm_platform.auth_context import Scope
from crm_platform.errors import PermissionDenied
from crm_reporting.domain import CountScope, count_scope
from crm_testing.services import identity


@pytest.mark.parametrize(
    ("scope", "region", "branch_id", "expected"),
    [
        (Scope.ALL, "north", "BJ001", CountScope()),
        (Scope.ALL, "", "", CountScope()),
        (Scope.REGION, "north", "BJ001", CountScope(region="north")),
        (Scope.BRANCH, "north", "BJ001", CountScope(branch_id="BJ001")),
    ],
)
def test_branch_scope_or_wider_reads_counts(scope: Scope, region: str, branch_id: str, expected: CountScope) -> None:
    assert count_scope(identity("u", scope=scope, region=region, branch_id=branch_id)) == expected


@pytest.mark.parametrize(
    ("scope", "region", "branch_id", "message"),
    [
        (Scope.TEAM, "north", "BJ001", "branch counts need branch scope or wider"),
        (Scope.OWN, "north", "BJ001", "branch counts need branch scope or wider"),
        (Scope.NONE, "north", "BJ001", "branch counts need branch scope or wider"),
        (Scope.REGION, "", "BJ001", "caller's scope names no region or branch"),
        (Scope.BRANCH, "north", "", "caller's scope names no region or branch"),
    ],
)
def test_narrower_or_incomplete_scopes_are_refused(scope: Scope, region: str, branch_id: str, message: str) -> None:
    with pytest.raises(PermissionDenied) as err:
        count_scope(identity("u", scope=scope, region=region, branch_id=branch_id))
    assert err.value.message == message


def test_reading_reports_needs_the_permission() -> None:
    with pytest.raises(PermissionDenied):
        count_scope(identity("u", scope=Scope.ALL, permissions=("customer:read",)))
