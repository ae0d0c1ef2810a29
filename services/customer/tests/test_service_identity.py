"""Service identity against the real customer service (real gRPC on loopback, SQLite, NATS): a service acting on
its own calls as ``svc:<name>`` with the permissions the policy declares for it; it cannot call a method its role
lacks; an unsigned, replayed or over-claiming identity is refused; the service-only reads (directory lookups,
birthdays) answer services, not users, and every birthday read is in the data-access log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm_customer.server import SPEC
from crm_customer.store.tables import data_access_log
from crm_platform.auth_context import ScopeMap
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.grpc_client import call_metadata
from crm_platform.policy import default_policy
from crm_testing.nats_server import NatsServer
from crm_testing.services import TEST_SECRET, identity, running_service

pb = customer_service_pb2
RM1 = identity("rm1")
POLICY = default_policy()
INTERACTION = POLICY.service_identity("interaction", on_behalf_of="rule:birthday-alerts")
TICKET = POLICY.service_identity("ticket", on_behalf_of="u-bo1")


def _individual(birth: str, mobile: str) -> pb.CreateCustomerRequest:
    return pb.CreateCustomerRequest(
        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
        name="王芳",
        profile=customer_pb2.CustomerProfile(birth_date=birth, mobile=mobile),
    )


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value.code()


async def test_service_identities_and_their_service_only_reads(private_nats: NatsServer, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'customer.db'}"
    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        near = (await stub.CreateCustomer(_individual("1980-12-30", "13800000001"), metadata=svc.md(RM1))).customer
        leap = (await stub.CreateCustomer(_individual("1992-02-29", "13800000002"), metadata=svc.md(RM1))).customer
        await stub.CreateCustomer(_individual("1975-06-15", "13800000003"), metadata=svc.md(RM1))

        # A lookup answers a service the ownership facts of a customer it does not know yet.
        lookup = pb.LookupCustomersRequest(customer_ids=[near.id, "c-unknown"])
        found = await stub.LookupCustomers(lookup, metadata=svc.md(INTERACTION), timeout=5)
        assert [(e.customer_id, e.owner_id, e.branch_id) for e in found.entries] == [(near.id, "rm1", "BJ001")]
        # ... and refuses a user, even one who may read the customer.
        assert await _code(stub.LookupCustomers(lookup, metadata=svc.md(RM1), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )

        # Birthdays across the year's end; a 29 February birthday falls on 28 February of a common year.
        window = pb.ListBirthdaysRequest(branch_id="BJ001", to="2027-03-01")
        setattr(window, "from", "2026-12-20")
        reply = await stub.ListBirthdays(window, metadata=svc.md(INTERACTION), timeout=5)
        assert [(b.customer_id, b.on, b.owner_id) for b in reply.birthdays] == [
            (near.id, "2026-12-30", "rm1"),
            (leap.id, "2027-02-28", "rm1"),
        ]
        # The ticket service's identity lacks customer:birthdays, a user too.
        assert await _code(stub.ListBirthdays(window, metadata=svc.md(TICKET), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await _code(stub.ListBirthdays(window, metadata=svc.md(RM1), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )

        # A service identity signed with the secret but claiming more than the policy grants it is refused.
        overclaim = dataclasses.replace(
            TICKET,
            permissions=TICKET.permissions | {"customer:birthdays"},
            scopes=ScopeMap([*TICKET.scopes.items(), ("customer:birthdays", TICKET.scope)]),
        )
        assert await _code(stub.ListBirthdays(window, metadata=svc.md(overclaim), timeout=5)) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        # Unsigned: refused.
        assert await _code(stub.ListBirthdays(window, timeout=5)) is grpc.StatusCode.UNAUTHENTICATED
        # Replayed: the same signed metadata a second time is refused.
        metadata = call_metadata(INTERACTION, TEST_SECRET)
        await stub.LookupCustomers(lookup, metadata=metadata, timeout=5)
        assert await _code(stub.LookupCustomers(lookup, metadata=metadata, timeout=5)) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        # Bad windows name the field.
        reversed_window = pb.ListBirthdaysRequest(branch_id="BJ001", to="2026-12-01")
        setattr(reversed_window, "from", "2026-12-20")
        assert await _code(stub.ListBirthdays(reversed_window, metadata=svc.md(INTERACTION), timeout=5)) is (
            grpc.StatusCode.INVALID_ARGUMENT
        )

    engine = create_engine(normalise_url(url))
    try:
        async with session_factory(engine)() as session:
            logged = (await session.execute(select(data_access_log))).all()
    finally:
        await engine.dispose()
    # Every answered birthday read is logged with the caller and on whose behalf (refused calls never ran).
    assert [(r.caller, r.on_behalf_of, r.purpose, r.answered) for r in logged] == [
        ("svc:interaction", "rule:birthday-alerts", "ListBirthdays", 2)
    ]
