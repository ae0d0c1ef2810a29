"""``/api/v1/customers``: thin handlers — parse, call the customer service, map."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from litestar import Request, Response, get, patch, post, put
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.customer.v1 import customer_service_pb2 as pb
from crm_gateway.schemas.common import Money
from crm_gateway.schemas.customers import (
    ENUMS,
    KIND_TO_PROTO,
    AssignBulkIn,
    AssignIn,
    BatchOutcomes,
    CustomerChangeOut,
    CustomerCreate,
    CustomerOut,
    CustomerPatch,
    HoldingIO,
    HoldingsBatchIn,
    HoldingsIn,
    HoldingsOut,
    ItemError,
    ItemOutcome,
    Kind,
    ManagedTagIn,
    ManagedTagOut,
    ManagedTags,
    MergeIn,
    MergeOut,
    ReclaimIn,
    RiskAppetite,
    SegmentIn,
    SegmentMembers,
    SegmentOut,
    TagsIn,
    Tier,
    enum_number,
    to_profile,
)
from crm_gateway.schemas.idempotency import IdempotencyKey, request_id
from crm_gateway.schemas.paging import Cursor, Limit, Page
from crm_gateway.schemas.preconditions import IfMatch, optional_version, required_version, versioned
from crm_platform.clients import CustomerClient
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import collect

_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
_TERM = Annotated[str | None, Parameter(required=False, max_length=100)]


def _identity(request: Request[Any, Any, Any]) -> Any:
    return request.scope["state"]["identity"]


def _customers(request: Request[Any, Any, Any]) -> CustomerClient:
    return request.app.state.clients.customer  # type: ignore[no-any-return]


def _answer(customer: Any, status_code: int = 200, **headers: str) -> Response[CustomerOut]:
    out = CustomerOut.from_proto(customer)
    return Response(out, status_code=status_code, headers={"ETag": f'"{out.version}"', **headers})


@get("/api/v1/customers/{customer_id:str}", opt={"permission": "customer:read"})
async def get_customer(request: Request[Any, Any, Any], customer_id: _ID) -> Response[CustomerOut]:
    """One customer in the caller's scope (404 outside it); sensitive fields masked; ``ETag`` = version."""
    reply = await _customers(request).get_customer(_identity(request), pb.GetCustomerRequest(customer_id=customer_id))
    return _answer(reply.customer)


@post("/api/v1/customers", opt={"permission": "customer:create"})
async def create_customer(
    request: Request[Any, Any, Any], data: CustomerCreate, idempotency_key: IdempotencyKey = None
) -> Response[CustomerOut]:
    """Create a customer owned by the calling RM or teller (others create into the branch pool).

    409 when the ID number, mobile or credit code belongs to a customer already: ``existing_id`` names it when
    the caller may see it.
    """
    data.violations().raise_if_any()
    message = pb.CreateCustomerRequest(
        kind=KIND_TO_PROTO[data.kind],
        name=data.name,
        request_id=request_id(_identity(request), idempotency_key),
        profile=to_profile(data.values()),
    )
    reply = await _customers(request).create_customer(_identity(request), message)
    return _answer(reply.customer, 201, Location=f"/api/v1/customers/{reply.customer.id}")


@patch("/api/v1/customers/{customer_id:str}", opt={"permission": "customer:write"})
async def update_customer(
    request: Request[Any, Any, Any], customer_id: _ID, data: CustomerPatch, if_match: IfMatch = None
) -> Response[CustomerOut]:
    """Change some fields (merge patch; ``null`` clears). Requires ``If-Match`` with the ETag read: 428 without,
    412 when the customer changed meanwhile."""
    expected = required_version(if_match, "the customer")
    data.violations().raise_if_any()
    changes = data.changes()
    message = pb.UpdateCustomerRequest(
        customer_id=customer_id,
        expected_version=expected,
        name=changes.get("name") or "",
        profile=to_profile(changes),
        update_mask=field_mask_pb2.FieldMask(paths=sorted(changes)),
        note=data.note or "",
    )
    reply = await versioned(
        _customers(request).update_customer(_identity(request), message),
        "the customer changed since it was read; read it again",
    )
    return _answer(reply.customer)


def _timestamp(value: dt.datetime | None, name: str) -> timestamp_pb2.Timestamp | None:
    """A query parameter's instant as a Timestamp: with a time zone, inside years 1 to 9999 in UTC."""
    with collect() as v:
        stamp = v.timestamp(name, value)
    return stamp


@get("/api/v1/customers", opt={"permission": "customer:read"})
async def list_customers(
    request: Request[Any, Any, Any],
    name: _TERM = None,
    name_prefix: Annotated[
        str | None, Parameter(required=False, min_length=1, max_length=100, description="names starting with it")
    ] = None,
    id_number: Annotated[str | None, Parameter(required=False, max_length=32)] = None,
    mobile: Annotated[str | None, Parameter(required=False, max_length=20)] = None,
    customer_no: Annotated[str | None, Parameter(required=False, max_length=20)] = None,
    tier: Annotated[list[Tier] | None, Parameter(required=False)] = None,
    risk_appetite: Annotated[list[RiskAppetite] | None, Parameter(required=False)] = None,
    tag: Annotated[list[str] | None, Parameter(required=False, description="customers carrying every tag")] = None,
    owner_id: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
    unassigned: bool = False,
    branch_id: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
    team_id: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
    kind: Kind | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
    last_contact_before: Annotated[
        dt.datetime | None,
        Parameter(required=False, description="customers last contacted before it, or never contacted"),
    ] = None,
    age_min: Annotated[
        int | None, Parameter(required=False, ge=0, le=150, description="individuals at least this old (years)")
    ] = None,
    age_max: Annotated[
        int | None, Parameter(required=False, ge=0, le=150, description="individuals at most this old (years)")
    ] = None,
    sort: Annotated[
        str,
        Parameter(pattern=r"^-?(created_at|updated_at|name|customer_no)$", description="e.g. -created_at (default)"),
    ] = "-created_at",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CustomerOut]:
    """Search and list the caller's customers: exact by name, ID number, mobile or customer number, combined with
    filters; always inside the caller's data scope."""
    message = pb.ListCustomersRequest(
        page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""),
        name=name or "",
        name_prefix=name_prefix or "",
        id_number=id_number or "",
        mobile=mobile or "",
        customer_no=customer_no or "",
        tiers=[enum_number(ENUMS["tier"], t) for t in tier or ()],
        risk_appetites=[enum_number(ENUMS["risk_appetite"], r) for r in risk_appetite or ()],
        tags=[t[:20] for t in tag or ()],
        owner_id=owner_id or "",
        unassigned=unassigned,
        branch_id=branch_id or "",
        team_id=team_id or "",
        kind=KIND_TO_PROTO[kind] if kind else 0,
        created_from=_timestamp(created_from, "created_from"),
        created_to=_timestamp(created_to, "created_to"),
        last_contact_before=_timestamp(last_contact_before, "last_contact_before"),
        age_min=age_min or 0,
        age_max=age_max or 0,
        order_by=sort,
    )
    reply = await _customers(request).list_customers(_identity(request), message)
    return Page(
        items=[CustomerOut.from_proto(c) for c in reply.customers], next_cursor=reply.page.next_page_token or None
    )


@get("/api/v1/customers/{customer_id:str}/history", opt={"permission": "customer:read"})
async def customer_history(
    request: Request[Any, Any, Any], customer_id: _ID, limit: Limit = 50, cursor: Cursor = None
) -> Page[CustomerChangeOut]:
    """Every change of the customer, newest first: who, when, the note, each field's masked before and after."""
    message = pb.ListCustomerHistoryRequest(
        customer_id=customer_id, page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or "")
    )
    reply = await _customers(request).list_customer_history(_identity(request), message)
    return Page(
        items=[CustomerChangeOut.from_proto(h) for h in reply.changes], next_cursor=reply.page.next_page_token or None
    )


@post("/api/v1/customers/{customer_id:str}/assign", opt={"permission": "customer:assign"}, status_code=200)
async def assign_customer(request: Request[Any, Any, Any], customer_id: _ID, data: AssignIn) -> Response[CustomerOut]:
    """Make ``owner_id`` the owner: the branch head within the branch, a team lead within the team."""
    owner = await request.app.state.store.user_by_id(data.owner_id)
    if owner is None or owner.status != "active":
        raise InvalidArgument([FieldViolation("owner_id", "is not an active user")])
    message = pb.AssignCustomerRequest(
        customer_id=customer_id,
        owner_id=owner.id,
        owner_team_id=owner.team_id,
        owner_branch_id=owner.branch_id,
        owner_roles=list(owner.roles),
        reason=data.reason,
    )
    reply = await _customers(request).assign_customer(_identity(request), message)
    return _answer(reply.customer)


@post("/api/v1/customers/{customer_id:str}/reclaim", opt={"permission": "customer:assign"}, status_code=200)
async def reclaim_customer(request: Request[Any, Any, Any], customer_id: _ID, data: ReclaimIn) -> Response[CustomerOut]:
    """Return the customer to the branch pool (the branch head)."""
    reply = await _customers(request).reclaim_customer(
        _identity(request), pb.ReclaimCustomerRequest(customer_id=customer_id, reason=data.reason)
    )
    return _answer(reply.customer)


@post("/api/v1/customers/{customer_id:str}/merge", opt={"permission": "customer:merge"}, status_code=200)
async def merge_customers(
    request: Request[Any, Any, Any], customer_id: _ID, data: MergeIn, if_match: IfMatch = None
) -> Response[MergeOut]:
    """Merge the duplicate file ``duplicate_id`` into this customer (the survivor): the survivor keeps its values
    and owner and takes the duplicate's values for its empty fields, its tags and the holdings of products it does
    not hold; the duplicate stays readable by id with ``status: merged`` and ``merged_into``, and leaves lists,
    searches and duplicate detection. Both must be in the caller's scope (404 otherwise). 409 when they cannot be
    the same customer (different kinds, different ID numbers of one type, contradicting files) or one is erased
    or merged already. ``If-Match`` (optional) with the survivor's ETag, ``duplicate_version`` with the
    duplicate's: 412 when either changed since."""
    data.violations().raise_if_any()
    expected = optional_version(if_match, "the survivor") or 0
    # The path names the survivor only: the audit record names the duplicate and the reason too.
    request.scope["state"]["audit_detail"] = {"duplicate_id": data.duplicate_id, "reason": data.reason.strip()}
    message = pb.MergeCustomersRequest(
        survivor_id=customer_id,
        duplicate_id=data.duplicate_id,
        reason=data.reason,
        expected_survivor_version=expected,
        expected_duplicate_version=data.duplicate_version or 0,
    )
    reply = await versioned(
        _customers(request).merge_customers(_identity(request), message),
        "a customer changed since it was read; read both again",
    )
    out = MergeOut.from_proto(reply.survivor)
    out.filled_fields = list(reply.filled_fields)
    return Response(out, headers={"ETag": f'"{out.version}"'})


@post("/api/v1/customers/{customer_id:str}/tags", opt={"permission": "customer:write"}, status_code=200)
async def tag_customer(request: Request[Any, Any, Any], customer_id: _ID, data: TagsIn) -> Response[CustomerOut]:
    """Put tags on (``add``) and take them off (``remove``) a customer."""
    message = pb.TagCustomerRequest(
        customer_id=customer_id, add=data.add, remove=data.remove, add_managed=data.add_managed
    )
    reply = await _customers(request).tag_customer(_identity(request), message)
    return _answer(reply.customer)


@post("/api/v1/segments", opt={"permission": "customer:read"})
async def create_segment(request: Request[Any, Any, Any], data: SegmentIn) -> Response[SegmentOut]:
    """Save a dynamic segment, shared in the caller's branch."""
    data.filter.violations().raise_if_any()
    message = pb.CreateSegmentRequest(name=data.name, filter=data.filter.to_proto())
    reply = await _customers(request).create_segment(_identity(request), message)
    return Response(SegmentOut.from_proto(reply.segment), status_code=201)


@get("/api/v1/segments", opt={"permission": "customer:read"})
async def list_segments(request: Request[Any, Any, Any], limit: Limit = 50, cursor: Cursor = None) -> Page[SegmentOut]:
    """The segments of the caller's branch."""
    message = pb.ListSegmentsRequest(page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""))
    reply = await _customers(request).list_segments(_identity(request), message)
    return Page(
        items=[SegmentOut.from_proto(s) for s in reply.segments], next_cursor=reply.page.next_page_token or None
    )


@get("/api/v1/segments/{segment_id:str}/members", opt={"permission": "customer:read"})
async def segment_members(
    request: Request[Any, Any, Any], segment_id: _ID, limit: Limit = 50, cursor: Cursor = None
) -> SegmentMembers:
    """The segment's members inside the caller's data scope (a page, and the total count)."""
    message = pb.ListSegmentMembersRequest(
        segment_id=segment_id, page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or "")
    )
    reply = await _customers(request).list_segment_members(_identity(request), message)
    return SegmentMembers(
        items=[CustomerOut.from_proto(c) for c in reply.customers],
        next_cursor=reply.page.next_page_token or None,
        total=reply.total,
    )


@put("/api/v1/customers/{customer_id:str}/holdings", opt={"permission": "customer:write"})
async def replace_holdings(request: Request[Any, Any, Any], customer_id: _ID, data: HoldingsIn) -> HoldingsOut:
    """Replace a customer's holdings with a core-banking snapshot; answers the new AUM and derived signals
    (large_inflow, large_outflow, maturity_window, tier_threshold_reached), also published as an event."""
    message = pb.ReplaceHoldingsRequest(customer_id=customer_id, holdings=[h.to_proto() for h in data.holdings])
    reply = await _customers(request).replace_holdings(_identity(request), message)
    aum = reply.customer.aum
    return HoldingsOut(
        holdings=[HoldingIO.from_proto(h) for h in reply.holdings],
        aum=Money.from_proto(aum),
        signals=list(reply.signals),
    )


@get("/api/v1/customers/{customer_id:str}/holdings", opt={"permission": "customer:read"})
async def list_holdings(request: Request[Any, Any, Any], customer_id: _ID) -> HoldingsOut:
    """A customer's holdings."""
    reply = await _customers(request).list_holdings(_identity(request), pb.ListHoldingsRequest(customer_id=customer_id))
    return HoldingsOut(holdings=[HoldingIO.from_proto(h) for h in reply.holdings])


def _errors(violations: Any) -> list[ItemError]:
    return [ItemError(field=v.field, message=v.description) for v in violations]


@post("/api/v1/customers/assign-bulk", opt={"permission": "customer:assign"}, status_code=200)
async def assign_customers(request: Request[Any, Any, Any], data: AssignBulkIn) -> BatchOutcomes:
    """Make ``owner_id`` the owner of many customers (the branch head within the branch, a team lead within the
    team). Each customer is assigned on its own, with its history entry and event; the answer gives one outcome
    per customer in the order asked: ``assigned``, ``not_found`` (unknown or outside your scope), ``forbidden``,
    ``invalid``, ``already_owner`` or ``conflict`` (changed meanwhile: try it again)."""
    data.violations().raise_if_any()
    owner = await request.app.state.store.user_by_id(data.owner_id)
    if owner is None or owner.status != "active":
        raise InvalidArgument([FieldViolation("owner_id", "is not an active user")])
    message = pb.AssignCustomersRequest(
        customer_ids=data.customer_ids,
        owner_id=owner.id,
        owner_team_id=owner.team_id,
        owner_branch_id=owner.branch_id,
        owner_roles=list(owner.roles),
        reason=data.reason,
    )
    reply = await _customers(request).assign_customers(_identity(request), message)
    return BatchOutcomes.of(
        [
            ItemOutcome(
                customer_id=r.customer_id,
                outcome=r.outcome,
                message=r.message or None,
                errors=_errors(r.violations),
                version=r.version or None,
            )
            for r in reply.results
        ]
    )


@put("/api/v1/customers/holdings", opt={"permission": "customer:write"})
async def replace_holdings_batch(request: Request[Any, Any, Any], data: HoldingsBatchIn) -> BatchOutcomes:
    """The batch variant of ``PUT /api/v1/customers/{id}/holdings`` for core-banking feeds: up to 1,000
    customers' snapshots, each replaced on its own with the same signals and ``holdings_changed`` event. One
    outcome per customer in the order given: ``updated`` (with the new AUM and signals), ``not_found``
    (unknown or outside your scope) or ``invalid`` (with each bad field, ``holdings[i].field``)."""
    data.violations().raise_if_any()
    message = pb.ReplaceHoldingsBatchRequest(
        snapshots=[
            pb.HoldingsSnapshot(customer_id=s.customer_id, holdings=[h.to_proto() for h in s.holdings])
            for s in data.snapshots
        ]
    )
    reply = await _customers(request).replace_holdings_batch(_identity(request), message)
    return BatchOutcomes.of(
        [
            ItemOutcome(
                customer_id=r.customer_id,
                outcome=r.outcome,
                message=r.message or None,
                errors=_errors(r.violations),
                aum=Money.from_proto(r.aum) if r.HasField("aum") else None,
                signals=list(r.signals),
            )
            for r in reply.results
        ]
    )


@post("/api/v1/managed-tags", opt={"permission": "tag:manage"})
async def define_managed_tag(request: Request[Any, Any, Any], data: ManagedTagIn) -> Response[ManagedTagOut]:
    """Add a managed tag to the catalog: an administrator's are bank-wide, a branch head's the branch's own.
    Only catalog names may be applied as managed tags (``add_managed``), and only by ``applicable_roles``."""
    message = pb.DefineManagedTagRequest(
        name=data.name, description=data.description, applicable_roles=data.applicable_roles
    )
    reply = await _customers(request).define_managed_tag(_identity(request), message)
    return Response(ManagedTagOut.from_proto(reply.tag), status_code=201)


@get("/api/v1/managed-tags", opt={"permission": "tag:read"})
async def list_managed_tags(request: Request[Any, Any, Any]) -> ManagedTags:
    """The managed tags the caller's branch may apply: the bank-wide ones and the branch's own."""
    reply = await _customers(request).list_managed_tags(_identity(request), pb.ListManagedTagsRequest())
    return ManagedTags(items=[ManagedTagOut.from_proto(t) for t in reply.tags])
