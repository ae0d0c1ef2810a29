"""gRPC ``crm.customer.v1.CustomerService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crm.common.v1 import money_pb2, paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm_customer import domain
from crm_customer.domain import Customer, FieldChange, register_customer, require, revise_profile
from crm_customer.domain.birthdays import check_window
from crm_customer.events import KIND_TO_PROTO, enum_number, enum_text
from crm_customer.store import CustomerFilter, CustomerStore
from crm_customer.store.birthdays import BirthdayQueries
from crm_customer.store.fastread import CustomerReads
from crm_customer.store.fastwrite import CustomerWrites
from crm_platform import identifiers
from crm_platform.auth_context import current_identity
from crm_platform.errors import Conflict, FailedPrecondition, FieldViolation, InvalidArgument
from crm_platform.grpc_server import declare_permissions
from crm_platform.idempotency import fingerprint
from crm_platform.outbox import utcnow
from crm_platform.paging import after_id, page_limit
from crm_platform.protobuf import timestamp
from crm_platform.validation import collect

_PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}
_ENUMS = {
    "gender": customer_pb2.Gender.DESCRIPTOR,
    "id_type": customer_pb2.IdType.DESCRIPTOR,
    "risk_appetite": customer_pb2.RiskAppetite.DESCRIPTOR,
    "tier": customer_pb2.Tier.DESCRIPTOR,
    "source_channel": customer_pb2.SourceChannel.DESCRIPTOR,
}
_TEXT = [f for f in domain.PROFILE_FIELDS if f not in _ENUMS and f not in ("interests", "do_not_disturb")]
_TEXT = [f for f in _TEXT if not f.startswith("annual_income") and f != "name"]


def profile_to_raw(profile: customer_pb2.CustomerProfile, fields: set[str] | None = None) -> dict[str, object]:
    """The plain values of a profile message (only ``fields`` when given) for domain validation."""
    raw: dict[str, object] = {}
    for name in _TEXT:
        raw[name] = getattr(profile, name)
    for name, descriptor in _ENUMS.items():
        raw[name] = enum_text(descriptor, getattr(profile, name))
    raw["interests"] = list(profile.interests)
    raw["do_not_disturb"] = profile.do_not_disturb
    raw["annual_income"] = profile.annual_income.amount
    raw["annual_income_currency"] = profile.annual_income.currency
    if fields is None:
        return raw
    wanted = set(fields)
    if "annual_income" in wanted:
        wanted.add("annual_income_currency")
    return {k: v for k, v in raw.items() if k in wanted}


# enum_number's answers, as one dict look-up per field ("" is 0; an unknown text a KeyError, as there).
_ENUM_NUMBERS = {name: {enum_text(d, v.number): v.number for v in d.values} for name, d in _ENUMS.items()}


def profile_to_proto(profile: domain.Profile, *, mask: bool = False) -> customer_pb2.CustomerProfile:
    """The wire form of a profile; with ``mask``, every sensitive field masked as :func:`domain.masked` masks it
    (what an answer carries), without building a masked copy of the profile first (a list maps 50 at a time)."""
    text = {name: _text(getattr(profile, name)) for name in _TEXT}
    if mask:
        for name, hide in domain.SENSITIVE_FIELDS.items():
            text[name] = hide(getattr(profile, name))
    message = customer_pb2.CustomerProfile(
        interests=list(profile.interests),
        do_not_disturb=profile.do_not_disturb,
        **text,
        **{name: numbers[getattr(profile, name)] for name, numbers in _ENUM_NUMBERS.items()},
    )
    if profile.annual_income:
        message.annual_income.CopyFrom(
            money_pb2.Money(amount=profile.annual_income, currency=profile.annual_income_currency)
        )
    return message


def _text(value: object) -> str:
    if value.__class__ is str:
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def to_proto(customer: Customer) -> customer_pb2.Customer:
    """The wire form of a customer, sensitive fields masked."""
    return customer_pb2.Customer(
        id=customer.id,
        customer_no=customer.customer_no,
        kind=KIND_TO_PROTO[customer.kind.value],
        name=customer.name,
        owner_id=customer.owner_id,
        branch_id=customer.branch_id,
        team_id=customer.team_id,
        region=customer.region,
        version=customer.version,
        created_at=timestamp(customer.created_at),
        updated_at=timestamp(customer.updated_at),
        profile=profile_to_proto(customer.profile, mask=True),
        erased=customer.erased_at is not None,
        tags=list(customer.tags),
        aum=money_pb2.Money(amount=f"{customer.aum:.2f}", currency="CNY"),
        product_count=customer.product_count,
        familiar=domain.is_familiar(customer.product_count, customer.aum),
        value_first=domain.is_value_first(customer.profile.tier, customer.aum),
        last_contact_at=timestamp(customer.last_contact_at) if customer.last_contact_at else None,
        merged_into=customer.merged_into,
        merged_at=timestamp(customer.merged_at) if customer.merged_at else None,
    )


_PRODUCT_TYPE = customer_pb2.ProductType.DESCRIPTOR


def holding_to_proto(h: domain.Holding) -> customer_pb2.Holding:
    """The wire form of a holding."""
    return customer_pb2.Holding(
        product_code=h.product_code,
        product_name=h.product_name,
        product_type=enum_number(_PRODUCT_TYPE, h.product_type),  # type: ignore[arg-type]
        amount=money_pb2.Money(amount=f"{h.amount:.2f}", currency=h.currency),
        start_date=_text(h.start_date),
        maturity_date=_text(h.maturity_date),
    )


def holding_to_raw(h: customer_pb2.Holding) -> dict[str, object]:
    """The plain values of a holding message for validation."""
    return {
        "product_code": h.product_code,
        "product_name": h.product_name,
        "product_type": enum_text(_PRODUCT_TYPE, h.product_type),
        "amount": h.amount.amount,
        "currency": h.amount.currency or "CNY",
        "start_date": h.start_date,
        "maturity_date": h.maturity_date,
    }


def _changes(items: list[FieldChange]) -> list[customer_pb2.FieldChange]:
    return [customer_pb2.FieldChange(field=c.field, before=c.before, after=c.after) for c in items]


def _when(message: Any, name: str) -> dt.datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=dt.UTC) if message.HasField(name) else None


def _filter(request: customer_service_pb2.ListCustomersRequest) -> CustomerFilter:
    prefix = request.name_prefix.strip()
    if len(prefix) > 100:
        raise InvalidArgument([FieldViolation("name_prefix", "must be at most 100 characters")])
    return CustomerFilter(
        name=request.name.strip(),
        name_prefix=prefix,
        last_contact_before=_when(request, "last_contact_before"),
        id_number=identifiers.normalise_id_number(request.id_number),
        mobile=identifiers.normalise_mobile(request.mobile),
        customer_no=request.customer_no.strip(),
        tiers=tuple(enum_text(_ENUMS["tier"], t) for t in request.tiers),
        tags=tuple(dict.fromkeys(t.strip() for t in request.tags if t.strip())),
        risk_appetites=tuple(enum_text(_ENUMS["risk_appetite"], r) for r in request.risk_appetites),
        owner_id=request.owner_id,
        unassigned=request.unassigned,
        branch_id=request.branch_id,
        team_id=request.team_id,
        kind=_PROTO_TO_KIND.get(request.kind, ""),
        created_from=request.created_from.ToDatetime(tzinfo=dt.UTC) if request.HasField("created_from") else None,
        created_to=request.created_to.ToDatetime(tzinfo=dt.UTC) if request.HasField("created_to") else None,
        order_by=request.order_by or "-created_at",
        age_min=request.age_min,
        age_max=request.age_max,
        today=dt.datetime.now(dt.UTC).date(),
    )


def _criteria(f: customer_pb2.SegmentFilter) -> domain.SegmentCriteria:
    return domain.SegmentCriteria(
        tiers=tuple(enum_text(_ENUMS["tier"], t) for t in f.tiers),
        tags=tuple(dict.fromkeys(t.strip() for t in f.tags)),
        risk_appetites=tuple(enum_text(_ENUMS["risk_appetite"], r) for r in f.risk_appetites),
        owner_id=f.owner_id,
        branch_id=f.branch_id,
        team_id=f.team_id,
        kind=_PROTO_TO_KIND.get(f.kind, "" if f.kind == 0 else "?"),
        age_min=f.age_min,
        age_max=f.age_max,
        exclude_do_not_disturb=f.do_not_disturb_excluded,
        last_contact_before=_when(f, "last_contact_before"),
        no_contact_days=f.no_contact_days,
    )


def segment_to_proto(segment: domain.Segment) -> customer_pb2.Segment:
    """The wire form of a segment."""
    c = segment.criteria
    return customer_pb2.Segment(
        id=segment.id,
        name=segment.name,
        filter=customer_pb2.SegmentFilter(
            tiers=[enum_number(_ENUMS["tier"], t) for t in c.tiers],  # type: ignore[misc]
            tags=list(c.tags),
            risk_appetites=[enum_number(_ENUMS["risk_appetite"], r) for r in c.risk_appetites],  # type: ignore[misc]
            owner_id=c.owner_id,
            branch_id=c.branch_id,
            team_id=c.team_id,
            kind=KIND_TO_PROTO.get(c.kind, 0),  # type: ignore[arg-type]
            age_min=c.age_min,
            age_max=c.age_max,
            do_not_disturb_excluded=c.exclude_do_not_disturb,
            last_contact_before=timestamp(c.last_contact_before) if c.last_contact_before else None,
            no_contact_days=c.no_contact_days,
        ),
        created_by=segment.created_by,
        branch_id=segment.branch_id,
        created_at=timestamp(segment.created_at),
    )


def _members_filter(criteria: domain.SegmentCriteria) -> CustomerFilter:
    now = utcnow()
    return CustomerFilter(
        tiers=criteria.tiers,
        tags=criteria.tags,
        risk_appetites=criteria.risk_appetites,
        owner_id=criteria.owner_id,
        branch_id=criteria.branch_id,
        team_id=criteria.team_id,
        kind=criteria.kind,
        age_min=criteria.age_min,
        age_max=criteria.age_max,
        exclude_do_not_disturb=criteria.exclude_do_not_disturb,
        last_contact_before=criteria.contact_cutoff(now),
        live_only=True,
        today=now.date(),
    )


def _not_merged(customer: Customer, *, erasing: bool = False) -> None:
    """A merged duplicate takes no more changes (its values would re-enter searches, counts and duplicate
    detection): they go to its survivor. Nor is it erased alone: the survivor holds the person's data too, and
    erasing the survivor erases the duplicate with it."""
    if customer.merged_into:
        message = (
            f"a merged customer is erased with the file it was merged into: erase {customer.merged_into}"
            if erasing
            else f"a merged customer cannot be changed; change the survivor {customer.merged_into}"
        )
        raise FailedPrecondition(message, reason="MERGED")


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    """Translates CustomerService calls; errors map to status codes in the shared interceptor."""

    def __init__(
        self, store: CustomerStore, reads: CustomerReads | None = None, writes: CustomerWrites | None = None
    ) -> None:
        self._store = store
        # GetCustomer, the hottest call, reads through asyncpg on PostgreSQL (store/fastread.py); a create
        # is one statement there (store/fastwrite.py).
        self._reads = reads or CustomerReads(store, None)
        self._writes = writes or CustomerWrites(store, None)
        self._birthdays = BirthdayQueries(store._sessions)

    async def GetCustomer(self, request: Any, context: Any) -> customer_service_pb2.GetCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        customer = await self._reads.get(identity, request.customer_id)
        return customer_service_pb2.GetCustomerResponse(customer=to_proto(customer))

    async def CreateCustomer(self, request: Any, context: Any) -> customer_service_pb2.CreateCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        raw = {**profile_to_raw(request.profile), "name": request.name}
        customer = register_customer(identity, _PROTO_TO_KIND.get(request.kind), raw, utcnow())
        # An earlier call with the same request id answers its customer if it was the same request, else 422
        # (checked by the write itself).
        created = await self._writes.create(identity, customer, request.request_id, fingerprint(request))
        return customer_service_pb2.CreateCustomerResponse(customer=to_proto(created))

    async def UpdateCustomer(self, request: Any, context: Any) -> customer_service_pb2.UpdateCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:write")
        paths = set(request.update_mask.paths)
        if not paths:
            raise InvalidArgument([FieldViolation("update_mask", "names no field to change")])
        if len(request.note) > 500:
            raise InvalidArgument([FieldViolation("note", "must be at most 500 characters")])
        current = await self._store.get(identity, request.customer_id)
        if current.erased_at is not None:
            raise FailedPrecondition("an erased customer cannot be changed", reason="ERASED")
        _not_merged(current)
        updates = profile_to_raw(request.profile, paths)
        if "name" in paths:
            updates["name"] = request.name
        updates.update({p: None for p in paths if p not in updates})  # unknown names: refused by the domain
        now = utcnow()
        profile, diff = revise_profile(current, updates, now.date())
        saved = await self._store.save_revision(
            identity, current, profile, diff, request.expected_version, request.note.strip(), now
        )
        return customer_service_pb2.UpdateCustomerResponse(customer=to_proto(saved))

    async def ListCustomers(self, request: Any, context: Any) -> customer_service_pb2.ListCustomersResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        page, cursor = await self._reads.list(
            identity, _filter(request), page_limit(request.page), request.page.page_token
        )
        return customer_service_pb2.ListCustomersResponse(
            customers=[to_proto(c) for c in page], page=paging_pb2.PageInfo(next_page_token=cursor)
        )

    async def ListCustomerHistory(  # noqa: N802
        self, request: Any, context: Any
    ) -> customer_service_pb2.ListCustomerHistoryResponse:
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        entries, cursor = await self._store.history(
            identity, request.customer_id, page_limit(request.page), request.page.page_token
        )
        return customer_service_pb2.ListCustomerHistoryResponse(
            changes=[
                customer_pb2.CustomerChange(
                    id=e.id,
                    action=e.action,
                    actor=e.actor,
                    occurred_at=timestamp(e.occurred_at),
                    note=e.note,
                    changes=_changes(e.changes),
                )
                for e in entries
            ],
            page=paging_pb2.PageInfo(next_page_token=cursor),
        )

    async def AssignCustomer(self, request: Any, context: Any) -> customer_service_pb2.AssignCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:assign")
        current = await self._store.get(identity, request.customer_id)
        _not_merged(current)
        reason = request.reason.strip()
        ownership = domain.plan_assignment(
            identity,
            current,
            request.owner_id.strip(),
            request.owner_team_id,
            request.owner_branch_id,
            tuple(request.owner_roles),
            reason,
        )
        saved = await self._store.save_ownership(identity, current, ownership, "assigned", reason, utcnow())
        return customer_service_pb2.AssignCustomerResponse(customer=to_proto(saved))

    async def ReclaimCustomer(self, request: Any, context: Any) -> customer_service_pb2.ReclaimCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:assign")
        current = await self._store.get(identity, request.customer_id)
        _not_merged(current)
        reason = request.reason.strip()
        ownership = domain.plan_reclaim(identity, current, reason)
        saved = await self._store.save_ownership(identity, current, ownership, "reclaimed", reason, utcnow())
        return customer_service_pb2.ReclaimCustomerResponse(customer=to_proto(saved))

    async def EraseCustomer(self, request: Any, context: Any) -> customer_service_pb2.EraseCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:erase")
        current = await self._store.get(identity, request.customer_id)
        if current.erased_at is not None:
            return customer_service_pb2.EraseCustomerResponse(customer=to_proto(current))
        _not_merged(current, erasing=True)
        reason = request.reason.strip()
        if not reason or len(reason) > 500:
            raise InvalidArgument([FieldViolation("reason", "is required (the lawful basis), at most 500 characters")])
        erased = await self._store.erase(identity, current, reason, utcnow())
        return customer_service_pb2.EraseCustomerResponse(customer=to_proto(erased))

    async def TagCustomer(self, request: Any, context: Any) -> customer_service_pb2.TagCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:write")
        current = await self._store.get(identity, request.customer_id)
        _not_merged(current)
        catalog = await self._store.managed_catalog(identity)
        plan = domain.plan_tagging(
            identity,
            current,
            list(request.add),
            list(request.remove),
            list(request.add_managed),
            catalog,
            await self._store.managed_on(current.id),
        )
        saved = await self._store.save_tags(identity, current, plan, utcnow())
        return customer_service_pb2.TagCustomerResponse(customer=to_proto(saved))

    async def CreateSegment(self, request: Any, context: Any) -> customer_service_pb2.CreateSegmentResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        segment = domain.define_segment(identity, request.name, _criteria(request.filter), utcnow())
        saved = await self._store.create_segment(segment)
        return customer_service_pb2.CreateSegmentResponse(segment=segment_to_proto(saved))

    async def ListSegments(self, request: Any, context: Any) -> customer_service_pb2.ListSegmentsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        segments, cursor = await self._store.list_segments(identity, page_limit(request.page), after_id(request.page))
        return customer_service_pb2.ListSegmentsResponse(
            segments=[segment_to_proto(s) for s in segments], page=paging_pb2.PageInfo(next_page_token=cursor)
        )

    async def ListSegmentMembers(  # noqa: N802
        self, request: Any, context: Any
    ) -> customer_service_pb2.ListSegmentMembersResponse:
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        segment = await self._store.get_segment(identity, request.segment_id)
        where = _members_filter(segment.criteria)
        page, cursor = await self._reads.list(identity, where, page_limit(request.page), request.page.page_token)
        total = await self._store.count(identity, where)
        return customer_service_pb2.ListSegmentMembersResponse(
            customers=[to_proto(c) for c in page], page=paging_pb2.PageInfo(next_page_token=cursor), total=total
        )

    async def ReplaceHoldings(self, request: Any, context: Any) -> customer_service_pb2.ReplaceHoldingsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:write")
        holdings = domain.validate_holdings([holding_to_raw(h) for h in request.holdings])
        current = await self._store.get(identity, request.customer_id)
        _not_merged(current)
        now = utcnow()
        change = domain.assess_holdings(current.aum, holdings, current.profile.tier, now.date())
        saved = await self._store.replace_holdings(identity, current, holdings, change, now)
        return customer_service_pb2.ReplaceHoldingsResponse(
            customer=to_proto(saved), holdings=[holding_to_proto(h) for h in holdings], signals=list(change.signals)
        )

    async def ListHoldings(self, request: Any, context: Any) -> customer_service_pb2.ListHoldingsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:read")
        holdings = await self._store.holdings(identity, request.customer_id)
        return customer_service_pb2.ListHoldingsResponse(holdings=[holding_to_proto(h) for h in holdings])

    async def RevealCustomer(self, request: Any, context: Any) -> customer_service_pb2.RevealCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "pii:reveal")
        fields = list(dict.fromkeys(request.fields))
        purpose = request.purpose.strip()
        with collect() as v:
            if not fields or any(f not in domain.SENSITIVE_FIELDS for f in fields):
                v.add("fields", f"must name some of {', '.join(domain.SENSITIVE_FIELDS)}")
            if not purpose or len(purpose) > 500:
                v.add("purpose", "is required, at most 500 characters")
        customer = await self._store.get(identity, request.customer_id)
        await self._store.record_reveal(identity, customer.id, fields, purpose)
        values = {f: getattr(customer.profile, f) for f in fields if getattr(customer.profile, f)}
        return customer_service_pb2.RevealCustomerResponse(values=values)

    async def AssignCustomers(self, request: Any, context: Any) -> customer_service_pb2.AssignCustomersResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:assign")
        ids = domain.check_bulk_ids(list(request.customer_ids))
        reason = request.reason.strip()
        visible = await self._store.visible(identity, ids)
        plans = domain.plan_bulk_assignment(
            identity,
            ids,
            visible,
            request.owner_id.strip(),
            request.owner_team_id,
            request.owner_branch_id,
            tuple(request.owner_roles),
            reason,
        )
        results = []
        for item in plans:
            result = customer_service_pb2.AssignmentResult(
                customer_id=item.customer_id,
                outcome=item.outcome,
                message=item.message,
                violations=[customer_service_pb2.ItemViolation(field=f, description=d) for f, d in item.violations],
            )
            if item.ownership is not None and item.customer is not None:
                if item.customer.merged_into:
                    result.outcome = "merged"
                    result.message = f"merged into {item.customer.merged_into}; assign the survivor"
                    results.append(result)
                    continue
                try:
                    saved = await self._store.save_ownership(
                        identity, item.customer, item.ownership, "assigned", reason, utcnow()
                    )
                    result.version = saved.version
                except Conflict as exc:
                    result.outcome, result.message = "conflict", str(exc)
            results.append(result)
        return customer_service_pb2.AssignCustomersResponse(results=results)

    async def ReplaceHoldingsBatch(  # noqa: N802
        self, request: Any, context: Any
    ) -> customer_service_pb2.ReplaceHoldingsBatchResponse:
        """See the proto."""
        identity = current_identity()
        require(identity, "customer:write")
        domain.check_snapshot_ids([s.customer_id for s in request.snapshots])
        visible = await self._store.visible(identity, [s.customer_id for s in request.snapshots])
        results = []
        for snapshot in request.snapshots:
            result = customer_service_pb2.HoldingsResult(customer_id=snapshot.customer_id)
            results.append(result)
            current = visible.get(snapshot.customer_id)
            if current is None:
                result.outcome, result.message = "not_found", "no such customer in your scope"
                continue
            if current.merged_into:
                result.outcome = "merged"
                result.message = f"merged into {current.merged_into}; its holdings belong to the survivor"
                continue
            try:
                holdings = domain.validate_holdings([holding_to_raw(h) for h in snapshot.holdings])
            except InvalidArgument as exc:
                result.outcome, result.message = "invalid", "the snapshot has invalid fields"
                result.violations.extend(
                    customer_service_pb2.ItemViolation(field=v.field, description=v.description) for v in exc.violations
                )
                continue
            now = utcnow()
            change = domain.assess_holdings(current.aum, holdings, current.profile.tier, now.date())
            saved = await self._store.replace_holdings(identity, current, holdings, change, now)
            result.outcome = "updated"
            result.aum.CopyFrom(money_pb2.Money(amount=f"{saved.aum:.2f}", currency="CNY"))
            result.signals.extend(change.signals)
        return customer_service_pb2.ReplaceHoldingsBatchResponse(results=results)

    async def DefineManagedTag(  # noqa: N802
        self, request: Any, context: Any
    ) -> customer_service_pb2.DefineManagedTagResponse:
        """See the proto."""
        identity = current_identity()
        tag = domain.define_managed_tag(
            identity, request.name, request.description, list(request.applicable_roles), utcnow()
        )
        saved = await self._store.define_managed_tag(tag)
        return customer_service_pb2.DefineManagedTagResponse(tag=managed_tag_to_proto(saved))

    async def MergeCustomers(self, request: Any, context: Any) -> customer_service_pb2.MergeCustomersResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, domain.MERGE_PERMISSION)
        reason = request.reason.strip()
        domain.check_merge_request(request.survivor_id, request.duplicate_id, reason)
        # Each read applies the caller's scope: a file outside it answers NOT_FOUND, like one that does not exist.
        survivor = await self._store.get(identity, request.survivor_id.strip())
        duplicate = await self._store.get(identity, request.duplicate_id.strip())
        now = utcnow()
        plan = domain.plan_merge(
            identity, survivor, duplicate, request.expected_survivor_version, request.expected_duplicate_version, now
        )
        saved = await self._store.save_merge(identity, survivor, duplicate, plan, reason, now)
        return customer_service_pb2.MergeCustomersResponse(survivor=to_proto(saved), filled_fields=plan.filled_fields)

    async def LookupCustomers(  # noqa: N802
        self, request: Any, context: Any
    ) -> customer_service_pb2.LookupCustomersResponse:
        """See the proto."""
        ids = list(dict.fromkeys(request.customer_ids))
        if not ids or len(ids) > 100:
            raise InvalidArgument([FieldViolation("customer_ids", "must name 1 to 100 customers")])
        entries = await self._store.directory_entries(ids)
        return customer_service_pb2.LookupCustomersResponse(
            entries=[
                customer_service_pb2.CustomerDirectoryEntry(**{**e, "as_of": timestamp(e["as_of"])}) for e in entries
            ]
        )

    async def ListBirthdays(self, request: Any, context: Any) -> customer_service_pb2.ListBirthdaysResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        start, end = check_window(getattr(request, "from"), request.to)
        if not request.branch_id:
            raise InvalidArgument([FieldViolation("branch_id", "is required")])
        found = await self._birthdays.list_birthdays(identity, request.branch_id, start, end, utcnow())
        limit = min(page_limit(request.page), 1000)
        after = request.page.page_token
        if after:
            found = [b for b in found if f"{b.on.isoformat()}|{b.customer_id}" > after]
        page = found[:limit]
        token = f"{page[-1].on.isoformat()}|{page[-1].customer_id}" if len(found) > limit else ""
        return customer_service_pb2.ListBirthdaysResponse(
            birthdays=[
                customer_service_pb2.Birthday(
                    customer_id=b.customer_id,
                    owner_id=b.owner_id,
                    team_id=b.team_id,
                    on=b.on.isoformat(),
                    tier=enum_number(customer_pb2.Tier.DESCRIPTOR, b.tier),  # type: ignore[arg-type]
                    do_not_disturb=b.do_not_disturb,
                )
                for b in page
            ],
            page=paging_pb2.PageInfo(next_page_token=token),
        )

    async def ListManagedTags(self, request: Any, context: Any) -> customer_service_pb2.ListManagedTagsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        if not identity.has("tag:manage"):
            require(identity, "tag:read")
        catalog = await self._store.managed_catalog(identity)
        return customer_service_pb2.ListManagedTagsResponse(tags=[managed_tag_to_proto(t) for t in catalog.values()])


def managed_tag_to_proto(tag: domain.ManagedTag) -> customer_pb2.ManagedTag:
    """The wire form of a catalog entry."""
    return customer_pb2.ManagedTag(
        name=tag.name,
        description=tag.description,
        applicable_roles=list(tag.applicable_roles),
        branch_id=tag.branch_id,
        created_by=tag.created_by,
        created_at=timestamp(tag.created_at),
    )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
    {
        "GetCustomer": "customer:read",
        "CreateCustomer": "customer:create",
        "UpdateCustomer": "customer:write",
        "ListCustomers": "customer:read",
        "ListCustomerHistory": "customer:read",
        "AssignCustomer": "customer:assign",
        "ReclaimCustomer": "customer:assign",
        "EraseCustomer": "customer:erase",
        "TagCustomer": "customer:write",
        "CreateSegment": "customer:read",
        "ListSegments": "customer:read",
        "ListSegmentMembers": "customer:read",
        "ReplaceHoldings": "customer:write",
        "ListHoldings": "customer:read",
        "RevealCustomer": "pii:reveal",
        "AssignCustomers": "customer:assign",
        "ReplaceHoldingsBatch": "customer:write",
        "DefineManagedTag": "tag:manage",
        "ListManagedTags": "tag:read",
        "MergeCustomers": "customer:merge",
        "LookupCustomers": "customer:lookup",
        "ListBirthdays": "customer:birthdays",
    },
)
