"""Holdings queries of :class:`crm_customer.store.CustomerStore`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from typing import Any

from sqlalchemy import delete, insert, select, update

from crm_customer import events
from crm_customer.domain import Customer, Holding, HoldingsChange
from crm_customer.store.tables import customer_holdings, customers
from crm_platform.auth_context import Identity


class HoldingQueries:
    """Reads and replaces holdings snapshots (mixed into the store; uses its sessions, outbox and scoped get)."""

    _sessions: Any
    _outbox: Any
    _get: Any

    async def holdings(self, identity: Identity, customer_id: str) -> list[Holding]:
        """A customer's holdings (the customer must be in the caller's scope)."""
        h = customer_holdings.c
        async with self._sessions() as session:
            await self._get(session, identity, customer_id)
            query = select(customer_holdings).where(h.customer_id == customer_id).order_by(h.product_code)
            rows = (await session.execute(query)).all()
        return [
            Holding(
                r.product_code,
                r.product_name,
                r.product_type,
                decimal.Decimal(r.amount).quantize(decimal.Decimal("0.01")),
                r.currency,
                r.start_date,
                r.maturity_date,
            )
            for r in rows
        ]

    async def replace_holdings(
        self, identity: Identity, before: Customer, holdings: list[Holding], change: HoldingsChange, now: dt.datetime
    ) -> Customer:
        """Replace the snapshot, keep AUM and product count on the customer, publish ``holdings_changed``."""
        after = dataclasses.replace(before, aum=change.aum_after, product_count=len(holdings))
        h = customer_holdings.c
        async with self._sessions() as session, session.begin():
            # A snapshot is absolute: the last one wins (the feed sends them in order per customer).
            await session.execute(
                update(customers)
                .where(customers.c.id == before.id)
                .values(aum=after.aum, product_count=after.product_count)
            )
            await session.execute(delete(customer_holdings).where(h.customer_id == before.id))
            if holdings:
                await session.execute(
                    insert(customer_holdings),
                    [
                        {
                            "customer_id": before.id,
                            "product_code": x.product_code,
                            "product_name": x.product_name,
                            "product_type": x.product_type,
                            "amount": x.amount,
                            "currency": x.currency,
                            "start_date": x.start_date,
                            "maturity_date": x.maturity_date,
                            "updated_at": now,
                        }
                        for x in holdings
                    ],
                )
            await self._outbox.add(
                session,
                events.CUSTOMER_HOLDINGS_CHANGED,
                events.holdings_changed(after, change),
                subject_id=before.id,
                actor=identity.user_id,
            )
        return after
