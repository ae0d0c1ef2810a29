"""Wiring of the customer service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from crm.customer.v1 import customer_service_pb2, customer_service_pb2_grpc
from crm_customer import subscriptions
from crm_customer.config import Settings
from crm_customer.import_servicer import wire_imports
from crm_customer.restore import reapply_erasures
from crm_customer.servicer import CustomerServicer
from crm_customer.store import CustomerStore
from crm_customer.store.fastread import CustomerReads
from crm_customer.store.fastwrite import CustomerWrites
from crm_platform.fastread import read_pool_for
from crm_platform.runtime import Context, ServiceSpec


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    settings: Settings = ctx.settings  # type: ignore[assignment]
    store = CustomerStore(ctx.sessions, ctx.outbox, settings.keyring())
    # PostgreSQL: the hottest read gets a few asyncpg connections of its own, opened and closed with the service
    # (a primary-key read takes well under a millisecond, so four serve thousands of calls a second).
    pool = read_pool_for(ctx.engine, size=4, name="crm-customer-reads")
    if pool is not None:
        ctx.background.append(asyncio.create_task(pool.serve(), name="customer-read-pool"))
    # A create is one statement (store/fastwrite.py) on connections of its own, so reads never queue behind
    # writes.
    write_pool = read_pool_for(ctx.engine, size=4, name="crm-customer-writes")
    if write_pool is not None:
        ctx.background.append(asyncio.create_task(write_pool.serve(), name="customer-write-pool"))
    servicer = CustomerServicer(store, CustomerReads(store, pool), CustomerWrites(store, write_pool))
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(servicer, server)
    names = [customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name]
    return [*names, wire_imports(server, ctx, store)]


SPEC = ServiceSpec(
    domain="customer",
    package="crm_customer",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda _ctx: subscriptions.subscriptions(),
    commands={"reapply-erasures": reapply_erasures},
)
