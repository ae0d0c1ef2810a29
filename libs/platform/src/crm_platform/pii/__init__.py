"""Personal data protection: envelope encryption, keyed hashes for exact lookup, and display masks.

* Every customer has its own random 256-bit **data key**; its fields are encrypted with it (AES-GCM, the
  customer id and field name bound as associated data, so a ciphertext copied to another row or field does
  not decrypt). The data key is stored **wrapped** by a master key named by a key id; rotating the master
  key re-wraps the small data keys (:meth:`Keyring.rewrap`), never the rows.
* **Crypto-shredding**: destroying a customer's wrapped data key makes every copy of its ciphertexts
  (replicas, backups, exports) unreadable, while the row's non-personal facts stay.
* **Lookup hashes**: HMAC-SHA256 under a key derived (HKDF) from each master key, over the field name and
  the normalised value; a hash carries its key id, so lookups after a rotation match rows hashed under any
  key still configured (:meth:`Keyring.lookup_hashes`).
* **Masks**: what every response shows unless the caller holds ``pii:reveal``.

Master keys come from ``CRM_PII_MASTER_KEYS`` (``kid1:base64key,kid2:base64key``, 32-byte keys) and the one
new data keys are wrapped with from ``CRM_PII_ACTIVE_KEY_ID``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE = 12
KEY_BYTES = 32


class PiiKeyError(ValueError):
    """A master key is missing or malformed, or a ciphertext does not decrypt."""


@dataclass(frozen=True)
class WrappedKey:
    """A customer's data key as stored: the master key id and the AES-GCM wrapped bytes."""

    kid: str
    wrapped: bytes


def parse_master_keys(spec: str) -> dict[str, bytes]:
    """Parse ``kid1:base64,kid2:base64`` into ``{kid: 32-byte key}``; raise :class:`PiiKeyError` naming a bad entry."""
    keys: dict[str, bytes] = {}
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        kid, sep, encoded = entry.partition(":")
        if not sep or not kid:
            raise PiiKeyError(f"master key entry {kid or entry[:8]!r} is not kid:base64key")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise PiiKeyError(f"master key {kid!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise PiiKeyError(f"master key {kid!r} must be {KEY_BYTES} bytes, got {len(key)}")
        keys[kid] = key
    if not keys:
        raise PiiKeyError("no master key configured")
    return keys


def generate_master_keys(kid: str = "k1") -> str:
    """A fresh ``kid:base64key`` specification (what the local stack stores on first start)."""
    return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class Keyring:
    """The master keys: wraps and unwraps data keys, encrypts fields, computes lookup hashes."""

    def __init__(self, master_keys: dict[str, bytes], active_kid: str) -> None:
        if active_kid not in master_keys:
            raise PiiKeyError(f"active key id {active_kid!r} is not among the master keys")
        self._raw = dict(master_keys)
        self._masters = {kid: AESGCM(key) for kid, key in master_keys.items()}
        self._lookup_keys = {kid: _derive(key, b"crm-pii-lookup-v1") for kid, key in master_keys.items()}
        # Each lookup key's HMAC with its key already absorbed: a hash copies it and adds the value (a third
        # cheaper than a one-shot hmac.digest, which sets the key up again every time).
        self._lookup_macs = {kid: hmac.new(key, digestmod="sha256") for kid, key in self._lookup_keys.items()}
        # The active key first: lookup_hashes answers its hash first.
        self._lookup_order = (active_kid, *(kid for kid in self._lookup_keys if kid != active_kid))
        self.active_kid = active_kid

    def __reduce__(self) -> tuple[type[Keyring], tuple[dict[str, bytes], str]]:
        # Pickled only to hand the keyring to a helper process of the same service (the import's preparation).
        return (Keyring, (self._raw, self.active_kid))

    def __repr__(self) -> str:
        return f"Keyring(kids={sorted(self._raw)}, active={self.active_kid!r})"  # never the keys

    @classmethod
    def from_spec(cls, spec: str, active_kid: str) -> Keyring:
        """Build from the environment's textual form."""
        return cls(parse_master_keys(spec), active_kid)

    # Data keys

    def new_data_key(self, owner_id: str) -> tuple[bytes, WrappedKey]:
        """A new random data key for ``owner_id`` (e.g. a customer id) and its wrapped form under the active key."""
        data_key = AESGCM.generate_key(bit_length=256)
        return data_key, self.wrap(owner_id, data_key)

    def wrap(self, owner_id: str, data_key: bytes, kid: str | None = None) -> WrappedKey:
        """Wrap ``data_key`` under master ``kid`` (default: the active one)."""
        kid = kid or self.active_kid
        nonce = os.urandom(_NONCE)
        aad = f"dk|{owner_id}|{kid}".encode()
        return WrappedKey(kid, _VERSION + nonce + self._masters[kid].encrypt(nonce, data_key, aad))

    def unwrap(self, owner_id: str, wrapped: WrappedKey) -> bytes:
        """The data key inside ``wrapped``; raise :class:`PiiKeyError` when its master key is gone or it is forged."""
        master = self._masters.get(wrapped.kid)
        if master is None:
            raise PiiKeyError(f"master key {wrapped.kid!r} is not configured")
        blob = wrapped.wrapped
        try:
            return master.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], f"dk|{owner_id}|{wrapped.kid}".encode())
        except InvalidTag:
            raise PiiKeyError("data key does not unwrap") from None

    def rewrap(self, owner_id: str, wrapped: WrappedKey) -> WrappedKey:
        """``wrapped`` re-wrapped under the active master key (rotation without touching the encrypted rows)."""
        if wrapped.kid == self.active_kid:
            return wrapped
        return self.wrap(owner_id, self.unwrap(owner_id, wrapped))

    # Fields

    @staticmethod
    def encrypt(data_key: bytes, owner_id: str, field: str, value: str) -> bytes:
        """AES-GCM ciphertext of ``value``, bound to its owner and field."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + AESGCM(data_key).encrypt(nonce, value.encode(), f"{owner_id}|{field}".encode())

    @staticmethod
    def encrypt_fields(data_key: bytes, owner_id: str, values: dict[str, str]) -> dict[str, bytes]:
        """:meth:`encrypt` of each ``field: value`` of one owner: the same ciphertexts, with the cipher set up once
        and every nonce drawn in one read of the system's random source (a batch import seals five fields of
        each of thousands of customers)."""
        if not values:
            return {}
        cipher = AESGCM(data_key)
        nonces = os.urandom(_NONCE * len(values))
        sealed = {}
        for index, (field, value) in enumerate(values.items()):
            nonce = nonces[index * _NONCE : (index + 1) * _NONCE]
            sealed[field] = _VERSION + nonce + cipher.encrypt(nonce, value.encode(), f"{owner_id}|{field}".encode())
        return sealed

    @staticmethod
    def decrypt(data_key: bytes, owner_id: str, field: str, blob: bytes) -> str:
        """The plaintext of :meth:`encrypt`; raise :class:`PiiKeyError` when it does not authenticate."""
        try:
            plain = AESGCM(data_key).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], f"{owner_id}|{field}".encode())
        except InvalidTag:
            raise PiiKeyError(f"{field} does not decrypt") from None
        return plain.decode()

    # Lookup hashes

    def lookup_hash(self, field: str, value: str, kid: str | None = None) -> str:
        """``kid:hex`` HMAC of a normalised value under the lookup key of ``kid`` (default: active)."""
        kid = kid or self.active_kid
        mac = self._lookup_macs[kid].copy()
        mac.update(f"{field}\x00{value}".encode())
        return f"{kid}:{mac.hexdigest()}"

    def lookup_hashes(self, field: str, value: str) -> list[str]:
        """The hash of ``value`` under every configured key, the active key's first: what an exact lookup must
        match."""
        return [self.lookup_hash(field, value, kid) for kid in self._lookup_order]


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


# Masks


def mask_id_number(value: str) -> str:
    """``110105********1234`` for an 18-character resident ID; first and last two kept for shorter numbers."""
    if not value:
        return ""
    if len(value) == 18:
        return value[:6] + "*" * 8 + value[-4:]
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def mask_mobile(value: str) -> str:
    """``138****8000``."""
    if not value:
        return ""
    if len(value) != 11:
        return "*" * max(len(value) - 4, 0) + value[-4:]
    return value[:3] + "****" + value[-4:]


def mask_email(value: str) -> str:
    """``z***@example.com``: the first character of the local part, then the domain."""
    if not value:
        return ""
    local, _, domain = value.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def mask_address(value: str) -> str:
    """The first six characters (province and city, typically), the rest hidden: ``北京市朝阳区****``."""
    if not value:
        return ""
    return value[:6] + "****" if len(value) > 6 else value[:1] + "****"


@dataclass(frozen=True)
class StaffContact:
    """A staff member's e-mail address and mobile (for notifications to them)."""

    email: str
    mobile: str


def staff_contact_key(secret: str) -> bytes:
    """The AES key of staff contacts from ``CRM_STAFF_CONTACT_KEY`` (any length; derived with HKDF)."""
    return _derive(secret.encode(), b"crm staff contact v1")


def seal_staff_contact(key: bytes, user_id: str, contact: StaffContact) -> bytes:
    """``contact`` sealed for the notification service, bound to ``user_id``."""
    payload = json.dumps({"email": contact.email, "mobile": contact.mobile}, ensure_ascii=False)
    return Keyring.encrypt(key, user_id, "staff_contact", payload)


def open_staff_contact(key: bytes, user_id: str, sealed: bytes) -> StaffContact:
    """The contact of :func:`seal_staff_contact`; :class:`PiiKeyError` when it does not authenticate."""
    data = json.loads(Keyring.decrypt(key, user_id, "staff_contact", sealed))
    return StaffContact(str(data.get("email", "")), str(data.get("mobile", "")))
