"""``/api/v1/access/explain``: may this user see or change this customer, and which rule decides."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from crm.customer.v1 import customer_service_pb2
from crm_gateway.policy import explain
from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import NotFound

_Id = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class AccessExplanation(msgspec.Struct):
    """The decision and its reason."""

    user_id: str
    customer_id: str
    can_read: bool
    can_write: bool
    scope: str
    rule: str


@get("/api/v1/access/explain", opt={"permission": "access:explain"})
async def explain_access(request: Request[Any, Any, Any], user: _Id, customer: _Id) -> AccessExplanation:
    """Whether ``user`` can see or change ``customer`` under the enforcing policy and scope rule."""
    caller: Identity = request.scope["state"]["identity"]
    state = request.app.state
    target = await state.store.user_by_id(user) or await state.store.user_by_username(user)
    if target is None:
        raise NotFound(f"user {user} not found")
    # The gateway reads the customer's ownership facts as itself (svc:gateway), on behalf of the caller.
    explainer = state.policy.service_identity("gateway", on_behalf_of=caller.user_id, request_id=caller.request_id)
    reply = await state.clients.customer.get_customer(
        explainer, customer_service_pb2.GetCustomerRequest(customer_id=customer)
    )
    record = reply.customer
    region = await state.store.branch_region(record.branch_id)
    # A branch head explains only inside the branch; admin and auditor (scope none) explain everywhere.
    if caller.scope_for("access:explain") is Scope.BRANCH and record.branch_id != caller.branch_id:
        raise NotFound(f"customer {customer} not found")
    decision = explain(
        state.policy,
        target.roles,
        {"id": target.id, "team": target.team_id, "branch": target.branch_id, "region": target.region},
        {"owner": record.owner_id, "team": record.team_id, "branch": record.branch_id, "region": region},
        read="customer:read",
        write="customer:write",
    )
    return AccessExplanation(
        target.id, customer, decision.can_read, decision.can_write, decision.scope.value, decision.rule
    )
