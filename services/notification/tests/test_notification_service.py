"""The notification service over real gRPC on loopback, with a real SQLite database and a real NATS.

One service runs for the whole module (stopping a service with durable consumers takes a while); each test uses
its own user ids, so messages left by other tests (or by other services' tests sharing the NATS server) never
count. The same queries run on PostgreSQL in ``test_notification_store.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from crm.common.v1 import envelope_pb2, paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.customer.v1 import events_pb2 as customer_events
from crm.notification.v1 import (
    events_pb2,
    notification_pb2,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from crm_customer.server import SPEC as CUSTOMER_SPEC
from crm_notification.server import SPEC
from crm_platform.grpc_client import parse_failure
from crm_platform.outbox import make_envelope
from crm_testing.nats_server import NatsServer
from crm_testing.services import RunningService, identity, running_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

CUSTOMER_CREATED = "crm.customer.customer.created"


@dataclass
class Notifications:
    """The module's running service and its stub."""

    svc: RunningService
    stub: notification_service_pb2_grpc.NotificationServiceStub
    nats_url: str

    async def inbox(self, user_id: str, **request: object) -> notification_service_pb2.ListInboxResponse:
        """One page of ``user_id``'s inbox, asked as that user."""
        return await self.stub.ListInbox(
            notification_service_pb2.ListInboxRequest(**request),  # type: ignore[arg-type]
            metadata=self.svc.md(identity(user_id)),
            timeout=5,
        )

    async def wait_for_inbox(
        self, user_id: str, count: int, timeout: float = 10.0
    ) -> list[notification_pb2.InboxMessage]:
        """``user_id``'s messages once there are at least ``count`` (bounded wait: events arrive asynchronously)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            messages = list((await self.inbox(user_id)).messages)
            if len(messages) >= count or asyncio.get_running_loop().time() > deadline:
                return messages
            await asyncio.sleep(0.05)

    async def publish_customer_created(self, owner_id: str, *, copies: int = 1) -> str:
        """Publish one ``customer.created`` event (``copies`` times, as redeliveries); return the customer id."""
        customer_id = str(uuid.uuid4())
        payload = customer_events.CustomerCreated(
            customer_id=customer_id, owner_id=owner_id, team_id="T1", branch_id="BJ001", region="north"
        )
        await self.publish(CUSTOMER_CREATED, payload, customer_id, "head", copies=copies)
        return customer_id

    async def publish(self, subject: str, payload: Message, subject_id: str, actor: str, *, copies: int = 1) -> None:
        """Publish one customer event as the customer service would (``copies`` times, as redeliveries)."""
        envelope = make_envelope(subject, "customer", payload, subject_id=subject_id, actor=actor)
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for copy in range(copies):
                # A distinct Nats-Msg-Id gets past JetStream's de-duplication: only the inbox stands in the way.
                ack = await js.publish(
                    subject, envelope.SerializeToString(), headers={"Nats-Msg-Id": f"{envelope.id}/{copy}"}
                )
                assert not ack.duplicate, "JetStream must store every copy for the test to mean anything"
        finally:
            await nc.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def notifications(
    private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Notifications]:
    data_dir = tmp_path_factory.mktemp("notification")
    url = f"sqlite+aiosqlite:///{data_dir / 'notification.db'}"
    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=data_dir) as svc:
        yield Notifications(svc, notification_service_pb2_grpc.NotificationServiceStub(svc.channel), private_nats.url)


def new_user() -> str:
    return f"rm-{uuid.uuid4().hex[:10]}"


async def inbox_created_events(nats_url: str, message_id: str, timeout: float = 10.0) -> list[object]:
    """The ``inbox.created`` messages about ``message_id`` (bounded wait until at least one has arrived)."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            "crm.notification.inbox.created", durable=None, stream="CRM_NOTIFICATION"
        )
        found: list[object] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not found and asyncio.get_running_loop().time() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
                if envelope.subject_id == message_id:
                    found.append((msg, envelope))
        return found
    finally:
        await nc.close()


async def test_customer_created_reaches_the_owners_inbox(
    notifications: Notifications, private_nats: NatsServer, tmp_path: Path
) -> None:
    owner = new_user()
    customer_db = f"sqlite+aiosqlite:///{tmp_path / 'customer.db'}"
    async with running_service(
        CUSTOMER_SPEC, database_url=customer_db, nats_url=private_nats.url, data_dir=tmp_path
    ) as crm:
        created = await customer_service_pb2_grpc.CustomerServiceStub(crm.channel).CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明"),
            metadata=crm.md(identity(owner)),
            timeout=5,
        )
    assert created.customer.owner_id == owner

    messages = await notifications.wait_for_inbox(owner, 1)
    assert len(messages) == 1
    message = messages[0]
    assert message.user_id == owner and message.kind == "customer_assigned" and not message.read
    assert created.customer.id in message.body and message.title
    assert list((await notifications.inbox(new_user())).messages) == []

    events = await inbox_created_events(private_nats.url, message.id)
    assert len(events) == 1
    msg, envelope = events[0]  # type: ignore[misc]
    assert msg.headers["Nats-Msg-Id"] == envelope.id and envelope.actor == owner
    payload = events_pb2.InboxMessageCreated()
    envelope.payload.Unpack(payload)
    assert payload == events_pb2.InboxMessageCreated(message_id=message.id, user_id=owner, kind="customer_assigned")


async def test_a_redelivered_event_changes_nothing(notifications: Notifications) -> None:
    owner, witness = new_user(), new_user()
    await notifications.publish_customer_created(owner, copies=2)
    # The consumer handles events in stream order: once the witness's message is in, both copies were handled.
    await notifications.publish_customer_created(witness)
    assert len(await notifications.wait_for_inbox(witness, 1)) == 1
    messages = list((await notifications.inbox(owner)).messages)
    assert len(messages) == 1


async def test_a_merge_tells_both_owners_once_and_a_reassignment_tells_the_new_owner(
    notifications: Notifications,
) -> None:
    survivor_owner, duplicate_owner, head, witness = new_user(), new_user(), new_user(), new_user()
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    merged = customer_events.CustomerMerged(
        survivor_id=survivor,
        duplicate_id=duplicate,
        actor=head,
        branch_id="BJ001",
        duplicate_branch_id="BJ001",
        survivor_owner_id=survivor_owner,
        duplicate_owner_id=duplicate_owner,
    )
    await notifications.publish("crm.customer.customer.merged", merged, survivor, head, copies=2)
    moved = customer_events.CustomerAssigned(
        customer_id=survivor, owner_id=duplicate_owner, previous_owner_id=survivor_owner, branch_id="BJ001"
    )
    await notifications.publish("crm.customer.customer.assigned", moved, survivor, head)
    taken = customer_events.CustomerAssigned(
        customer_id=duplicate, owner_id=head, previous_owner_id="", branch_id="BJ001"
    )
    await notifications.publish("crm.customer.customer.assigned", taken, duplicate, head)
    await notifications.publish_customer_created(witness)
    # Events are handled in stream order: once the witness's message is in, everything before it was handled.
    assert len(await notifications.wait_for_inbox(witness, 1)) == 1

    (told,) = (await notifications.inbox(survivor_owner)).messages  # once, although delivered twice
    assert told.kind == "customer_merged" and duplicate in told.body and survivor in told.body
    first, second = (await notifications.inbox(duplicate_owner)).messages  # newest first
    assert (second.kind, first.kind) == ("customer_merged", "customer_assigned")
    assert f"merged into customer {survivor}" in second.body and f"in the care of {survivor_owner}" in second.body
    assert survivor in first.body
    assert list((await notifications.inbox(head)).messages) == []  # who merged and who took a file is not told


async def test_inbox_pages_newest_first(notifications: Notifications) -> None:
    owner = new_user()
    customers = [await notifications.publish_customer_created(owner) for _ in range(5)]
    assert len(await notifications.wait_for_inbox(owner, 5)) == 5

    seen, token = [], ""
    for expected_size in (2, 2, 1):
        page = await notifications.inbox(owner, page=paging_pb2.PageRequest(page_size=2, page_token=token))
        assert len(page.messages) == expected_size
        seen.extend(page.messages)
        token = page.page.next_page_token
    assert token == ""
    assert [customer for m in seen for customer in customers if customer in m.body] == list(reversed(customers))
    assert [m.id for m in seen] == sorted((m.id for m in seen), reverse=True)
    unread = await notifications.inbox(owner, unread_only=True)
    assert [m.id for m in unread.messages] == [m.id for m in seen]


async def test_permission_and_invalid_token(notifications: Notifications) -> None:
    svc, stub = notifications.svc, notifications.stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListInbox(
            notification_service_pb2.ListInboxRequest(),
            metadata=svc.md(identity("rm1", permissions=("customer:read",))),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await notifications.inbox("rm1", page=paging_pb2.PageRequest(page_token="garbage"))
    failure = parse_failure(err.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in failure.violations] == ["page.page_token"]
