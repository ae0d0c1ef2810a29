"""Staff e-mail addresses and mobiles: encrypted at rest, masked in answers, sealed on the wire.

At rest each user's contact is encrypted with a data key of that user's own (``Keyring.new_data_key``), wrapped
by the PII master key (``CRM_PII_MASTER_KEYS``), each field bound to the user id and its name. On the identity
stream it travels sealed with ``CRM_STAFF_CONTACT_KEY`` (``crm.identity.user.contact_changed``), which only the
notification service holds: the other consumers of the stream see ciphertext. Answers show masks only.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.identity.v1 import events_pb2
from crm_gateway.identity import staff_contacts
from crm_platform.identifiers import check_email, check_mobile, normalise_email, normalise_mobile
from crm_platform.outbox import utcnow
from crm_platform.pii import Keyring, StaffContact, WrappedKey, seal_staff_contact, staff_contact_key
from crm_platform.validation import Violations

CONTACT_CHANGED = "crm.identity.user.contact_changed"


def checked_email(v: Violations, value: str) -> str:
    """``value`` normalised ("" stays ""), or a violation naming ``email``."""
    email = normalise_email(value)
    if email and (problem := check_email(email)) is not None:
        v.add("email", problem)
    return email


def checked_mobile(v: Violations, value: str) -> str:
    """``value`` normalised (digits, no +86; "" stays ""), or a violation naming ``mobile``."""
    mobile = normalise_mobile(value)
    if mobile and (problem := check_mobile(mobile)) is not None:
        v.add("mobile", problem)
    return mobile


class StaffContacts:
    """Reads and writes the ``staff_contacts`` table inside the caller's session, and seals contacts for events."""

    def __init__(self, keyring: Keyring, seal_secret: str) -> None:
        self._keyring = keyring
        self._seal_key = staff_contact_key(seal_secret)

    async def read(self, session: AsyncSession, user_ids: Iterable[str]) -> dict[str, StaffContact]:
        """The contacts of those of ``user_ids`` that have one, in the clear (for masking or sealing only)."""
        ids = list(user_ids)
        if not ids:
            return {}
        c = staff_contacts.c
        rows = (await session.execute(select(staff_contacts).where(c.user_id.in_(ids)))).all()
        return {row.user_id: self._open(row) for row in rows}

    async def after(self, session: AsyncSession, after: str | None, limit: int) -> list[tuple[str, StaffContact]]:
        """Up to ``limit`` contacts by user id, after ``after`` (the organisation's re-announcement)."""
        c = staff_contacts.c
        query = select(staff_contacts).order_by(c.user_id).limit(limit)
        if after is not None:
            query = query.where(c.user_id > after)
        return [(row.user_id, self._open(row)) for row in (await session.execute(query)).all()]

    async def write(self, session: AsyncSession, user_id: str, contact: StaffContact) -> None:
        """Store ``contact`` (a fresh data key each time); an empty one removes the row, and its key with it."""
        c = staff_contacts.c
        if not contact.email and not contact.mobile:
            await session.execute(delete(staff_contacts).where(c.user_id == user_id))
            return
        data_key, wrapped = self._keyring.new_data_key(user_id)
        values = {
            "kid": wrapped.kid,
            "wrapped_key": wrapped.wrapped,
            "email_enc": Keyring.encrypt(data_key, user_id, "email", contact.email) if contact.email else None,
            "mobile_enc": Keyring.encrypt(data_key, user_id, "mobile", contact.mobile) if contact.mobile else None,
            "updated_at": utcnow(),
        }
        changed = await session.execute(update(staff_contacts).where(c.user_id == user_id).values(**values))
        if not changed.rowcount:  # type: ignore[attr-defined]
            await session.execute(insert(staff_contacts).values(user_id=user_id, **values))

    def event(self, user_id: str, contact: StaffContact) -> events_pb2.StaffContactChanged:
        """The ``contact_changed`` payload: the contact sealed for the notification service, bound to the user."""
        return events_pb2.StaffContactChanged(
            user_id=user_id, sealed=seal_staff_contact(self._seal_key, user_id, contact)
        )

    def _open(self, row: object) -> StaffContact:
        m = row._mapping  # type: ignore[attr-defined]
        user_id = m["user_id"]
        data_key = self._keyring.unwrap(user_id, WrappedKey(m["kid"], m["wrapped_key"]))
        email = Keyring.decrypt(data_key, user_id, "email", m["email_enc"]) if m["email_enc"] else ""
        mobile = Keyring.decrypt(data_key, user_id, "mobile", m["mobile_enc"]) if m["mobile_enc"] else ""
        return StaffContact(email, mobile)
