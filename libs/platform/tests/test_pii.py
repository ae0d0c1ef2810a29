"""Envelope encryption, lookup hashes across a key rotation, crypto-shredding and masks."""

from __future__ import annotations

import base64
import hmac
import os

import pytest

from crm_platform import pii
from crm_platform.pii import Keyring, PiiKeyError, WrappedKey


def _spec(*kids: str) -> str:
    return ",".join(f"{k}:{base64.b64encode(os.urandom(32)).decode()}" for k in kids)


def test_fields_round_trip_and_are_bound_to_owner_and_field() -> None:
    ring = Keyring.from_spec(_spec("k1"), "k1")
    data_key, wrapped = ring.new_data_key("c1")
    assert wrapped.kid == "k1" and data_key not in wrapped.wrapped
    blob = ring.encrypt(data_key, "c1", "mobile", "13800138000")
    assert b"13800138000" not in blob
    assert ring.decrypt(ring.unwrap("c1", wrapped), "c1", "mobile", blob) == "13800138000"
    with pytest.raises(PiiKeyError):
        ring.decrypt(data_key, "c2", "mobile", blob)  # copied to another customer
    with pytest.raises(PiiKeyError):
        ring.decrypt(data_key, "c1", "id_number", blob)  # copied to another field
    with pytest.raises(PiiKeyError):
        ring.unwrap("c2", wrapped)  # another customer's key slot
    # Two encryptions of one value differ (random nonces): equal ciphertexts reveal nothing.
    assert ring.encrypt(data_key, "c1", "mobile", "13800138000") != blob


def test_fields_sealed_together_are_each_bound_and_have_nonces_of_their_own() -> None:
    ring = Keyring.from_spec(_spec("k1"), "k1")
    data_key, _ = ring.new_data_key("c1")
    values = {"id_number": "11010519491231002X", "mobile": "13800138000", "email": "a@example.com"}
    sealed = ring.encrypt_fields(data_key, "c1", values)
    assert list(sealed) == list(values)
    for field, value in values.items():
        assert value.encode() not in sealed[field]
        assert ring.decrypt(data_key, "c1", field, sealed[field]) == value
        with pytest.raises(PiiKeyError):
            ring.decrypt(data_key, "c2", field, sealed[field])
    assert len({blob[1:13] for blob in sealed.values()}) == len(values)  # no nonce shared between fields
    swapped = ring.encrypt_fields(data_key, "c1", {"mobile": "13800138000"})["mobile"]
    with pytest.raises(PiiKeyError):
        ring.decrypt(data_key, "c1", "id_number", swapped)
    assert ring.encrypt_fields(data_key, "c1", {}) == {}


def test_lookup_hash_is_the_keyed_hmac_of_field_and_value() -> None:
    import hashlib
    import hmac

    ring = Keyring.from_spec(_spec("k1"), "k1")
    expected = hmac.new(ring._lookup_keys["k1"], b"mobile\x0013800138000", hashlib.sha256).hexdigest()
    assert ring.lookup_hash("mobile", "13800138000") == f"k1:{expected}"


def test_rotation_rewraps_keys_and_lookups_still_match() -> None:
    spec = _spec("k1")
    old = Keyring.from_spec(spec, "k1")
    data_key, wrapped = old.new_data_key("c1")
    blob = old.encrypt(data_key, "c1", "id_number", "110105199001011232")
    old_hash = old.lookup_hash("id_number", "110105199001011232")

    new = Keyring.from_spec(spec + "," + _spec("k2"), "k2")
    rewrapped = new.rewrap("c1", wrapped)
    assert rewrapped.kid == "k2"
    # The row's ciphertext is untouched; only the data key's wrapping changed.
    assert new.decrypt(new.unwrap("c1", rewrapped), "c1", "id_number", blob) == "110105199001011232"
    hashes = new.lookup_hashes("id_number", "110105199001011232")
    assert old_hash in hashes and new.lookup_hash("id_number", "110105199001011232") == hashes[0]  # active first
    # The same HMAC-SHA256 as a one-shot digest under the derived lookup key, however often the key is reused.
    for value in ("110105199001011232", "13800138000", ""):
        expected = hmac.digest(new._lookup_keys["k2"], f"mobile\x00{value}".encode(), "sha256").hex()
        assert new.lookup_hash("mobile", value) == f"k2:{expected}"
    assert new.lookup_hash("mobile", "110105199001011232") not in hashes  # per field
    only_new = Keyring.from_spec(_spec("k2"), "k2")
    with pytest.raises(PiiKeyError):
        only_new.unwrap("c1", wrapped)


def test_crypto_shredding_leaves_nothing_to_decrypt_with() -> None:
    ring = Keyring.from_spec(_spec("k1"), "k1")
    data_key, wrapped = ring.new_data_key("c1")
    blob = ring.encrypt(data_key, "c1", "address", "北京市朝阳区建国路88号")
    other_key, _ = ring.new_data_key("c1")  # a guess with a fresh key fails: only the destroyed key opened it
    with pytest.raises(PiiKeyError):
        ring.decrypt(other_key, "c1", "address", blob)
    with pytest.raises(PiiKeyError):
        ring.unwrap("c1", WrappedKey("k1", wrapped.wrapped[:-1] + bytes([wrapped.wrapped[-1] ^ 1])))


@pytest.mark.parametrize(
    ("spec", "active", "problem"),
    [
        ("", "k1", "no master key"),
        ("k1:notbase64!!", "k1", "base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "k1", "32 bytes"),
        ("k1", "k1", "kid:base64key"),
        (_spec("k1"), "k9", "active key id"),
    ],
)
def test_bad_master_keys_are_refused(spec: str, active: str, problem: str) -> None:
    with pytest.raises(PiiKeyError, match=problem):
        Keyring.from_spec(spec, active)


@pytest.mark.parametrize(
    ("mask", "value", "shown"),
    [
        (pii.mask_id_number, "110105199001011234", "110105********1234"),
        (pii.mask_id_number, "E12345678", "E1*****78"),
        (pii.mask_id_number, "", ""),
        (pii.mask_mobile, "13800138000", "138****8000"),
        (pii.mask_email, "liming@example.com", "l***@example.com"),
        (pii.mask_address, "北京市朝阳区建国路88号", "北京市朝阳区****"),
        (pii.mask_address, "北京", "北****"),
    ],
)
def test_masks(mask: object, value: str, shown: str) -> None:
    assert mask(value) == shown  # type: ignore[operator]
