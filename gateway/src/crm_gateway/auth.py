"""Authentication: argon2id passwords with policy and lock-out, JWT access tokens, rotating refresh tokens.

A valid access token is checked without touching the database (signature, expiry, and an in-memory set of
sessions revoked by logout on any replica, see ``crm_gateway.revocations``), so the check costs microseconds
per request.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crm_gateway.identity import IdentityStore, User
from crm_gateway.revocations import Revocations
from crm_platform.auth_context import Identity
from crm_platform.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from crm_platform.ids import new_id
from crm_platform.outbox import utcnow

from .policy import Policy

PASSWORD_HISTORY = 5
TOTP_ISSUER = "Bank CRM"
MAX_FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
LOCK_DURATION = dt.timedelta(minutes=15)
_ALGORITHM = "HS256"
_VERIFIED_CACHE = 4096  # access tokens remembered after a verified signature (a few MB at most)
_ISSUER = "crm-gateway"

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so both paths cost one argon2 verification.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def check_password_policy(password: str, username: str) -> None:
    """≥ 10 characters, three of upper/lower/digit/symbol, not the username; raise naming the field."""
    problems = []
    if len(password) < 10:
        problems.append("must be at least 10 characters")
    classes = sum(
        [
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c.isdigit() for c in password),
            any(c in string.punctuation or (not c.isalnum() and not c.isspace()) for c in password),
        ]
    )
    if classes < 3:
        problems.append("must mix three of upper case, lower case, digits and symbols")
    if username and username.lower() in password.lower():
        problems.append("must not contain the username")
    if problems:
        raise InvalidArgument([FieldViolation("new_password", p) for p in problems])


@dataclass(frozen=True)
class TokenPair:
    """What a login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int


class Authenticator:
    """Login, token issue and verification, refresh rotation and logout."""

    def __init__(self, store: IdentityStore, policy: Policy, secret: str, access_minutes: int, refresh_hours: int):
        self._store = store
        self._policy = policy
        self._secret = secret
        self._access_ttl = access_minutes * 60
        self._refresh_ttl = dt.timedelta(hours=refresh_hours)
        # Sessions revoked by logout or refresh-token reuse, on any replica (see crm_gateway.revocations).
        self.revocations = Revocations(self._access_ttl)
        self._verified: dict[str, tuple[dict[str, Any], Identity]] = {}
        # TOTP seeds are C3 data: encrypted at rest with a key derived from the gateway's secret.
        self._seal_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"crm-totp-seal").derive(
            secret.encode()
        )

    async def login(self, username: str, password: str, otp: str | None = None) -> TokenPair:
        """Check the password (same answer for unknown user and wrong password) and, when enrolled, the
        one-time code; five failures within 15 minutes lock the account for 15 minutes."""
        user = await self._store.user_by_username(username)
        now = utcnow()
        if user is None or user.status != "active":
            _verify(_DUMMY_HASH, password)
            raise Unauthenticated("invalid username or password")
        if user.locked_until is not None and user.locked_until > now:
            _verify(_DUMMY_HASH, password)
            raise Unauthenticated("account locked after repeated failures; try again later", reason="ACCOUNT_LOCKED")
        password_ok = _verify(user.password_hash, password)
        if password_ok and user.totp_enabled:
            if not otp:
                raise Unauthenticated("one-time code required", reason="OTP_REQUIRED")
            password_ok = self._totp(user.totp_secret).verify(otp, valid_window=1)
        if not password_ok:
            in_window = user.first_failed_at is not None and now - user.first_failed_at < FAILURE_WINDOW
            failures = user.failed_logins + 1 if in_window else 1
            first = user.first_failed_at if in_window and user.first_failed_at else now
            locked = now + LOCK_DURATION if failures >= MAX_FAILURES else None
            await self._store.record_failure(user.id, failures, first, locked)
            raise Unauthenticated("invalid username or password")
        await self._store.record_success(user.id)
        return await self._issue(user, family_id=new_id())

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token; a reused one revokes its whole family (stolen-token detection)."""
        outcome = await self._store.use_refresh_token(_digest(refresh_token))
        if outcome is None:
            raise Unauthenticated("invalid refresh token")
        status, user_id, family_id = outcome
        if status == "reused":
            self._revoke(family_id)
            raise Unauthenticated("refresh token reuse detected; the session is revoked", reason="TOKEN_REUSED")
        if status == "expired":
            raise Unauthenticated("refresh token expired")
        user = await self._store.user_by_id(user_id)
        if user is None or user.status != "active":
            raise Unauthenticated("invalid refresh token")
        return await self._issue(user, family_id)

    async def logout(self, identity_session: str, user_id: str = "") -> None:
        """Revoke the login session: its refresh tokens, and its access tokens on every replica (this one at
        once, the others when the ``crm.identity.session.revoked`` event reaches them)."""
        await self._store.revoke_family(identity_session, user_id, "logout")
        self._revoke(identity_session)

    async def change_password(self, user_id: str, current: str, new: str) -> TokenPair:
        """Change one's own password under the policy; clears the forced-change flag and issues fresh tokens."""
        user = await self._store.user_by_id(user_id)
        if user is None or not _verify(user.password_hash, current):
            raise InvalidArgument([FieldViolation("current_password", "does not match")])
        check_password_policy(new, user.username)
        for earlier in await self._store.recent_password_hashes(user.id, PASSWORD_HISTORY):
            if _verify(earlier, new):
                raise InvalidArgument([FieldViolation("new_password", "must not be one of the last 5 passwords")])
        await self._store.set_password(user.id, hash_password(new), must_change=False)
        updated = await self._store.user_by_id(user.id)
        assert updated is not None
        return await self._issue(updated, family_id=new_id())

    async def enrol_totp(self, user_id: str) -> tuple[str, str]:
        """Start TOTP enrolment: a new secret (stored encrypted, not yet required); returns it and its URI."""
        user = await self._store.user_by_id(user_id)
        assert user is not None
        secret = pyotp.random_base32()
        await self._store.set_totp(user.id, self._seal(secret), enabled=False)
        return secret, pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)

    async def confirm_totp(self, user_id: str, otp: str) -> None:
        """Finish enrolment with a first valid code; from then on login requires a code."""
        user = await self._store.user_by_id(user_id)
        if user is None or not user.totp_secret:
            raise InvalidArgument([FieldViolation("otp", "no enrolment in progress")])
        if not self._totp(user.totp_secret).verify(otp, valid_window=1):
            raise InvalidArgument([FieldViolation("otp", "does not match")])
        await self._store.set_totp(user.id, user.totp_secret, enabled=True)

    def _totp(self, sealed: str | None) -> pyotp.TOTP:
        return pyotp.TOTP(self._open(sealed or ""))

    def _seal(self, secret: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self._seal_key).encrypt(nonce, secret.encode(), b"totp")).decode()

    def _open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return AESGCM(self._seal_key).decrypt(raw[:12], raw[12:], b"totp").decode()

    async def _issue(self, user: User, family_id: str) -> TokenPair:
        now = int(time.time())
        claims = {
            "iss": _ISSUER,
            "sub": user.id,
            "usr": user.username,
            "roles": list(user.roles),
            "branch": user.branch_id,
            "team": user.team_id,
            "region": user.region,
            "sid": family_id,
            "pwd_change": user.must_change_password,
            "iat": now,
            "exp": now + self._access_ttl,
        }
        access = jwt.encode(claims, self._secret, algorithm=_ALGORITHM)
        refresh = secrets.token_urlsafe(32)
        await self._store.add_refresh_token(_digest(refresh), user.id, family_id, utcnow() + self._refresh_ttl)
        return TokenPair(access, refresh, self._access_ttl)

    def verify(self, token: str, request_id: str) -> tuple[Identity, dict[str, Any]]:
        """Check an access token offline; return the caller's identity and the token's claims.

        A token whose signature verified is remembered (bounded, by its exact text) with its claims, so the
        next request with it skips the signature and PyJWT's per-character segment checks; expiry and
        revocation are checked on every request all the same.
        """
        now = time.time()
        cached = self._verified.get(token)
        if cached is None or cached[0]["exp"] <= now:
            claims = self._decode(token)
            # The identity without the request id: the policy's grant for these roles, worked out once.
            base = self._policy.identity(
                claims["sub"],
                tuple(claims.get("roles", ())),
                claims.get("branch", ""),
                claims.get("team", ""),
                claims.get("region", ""),
                "",
            )
            cached = (claims, base)
            if len(self._verified) >= _VERIFIED_CACHE:
                self._verified.pop(next(iter(self._verified)))  # the oldest entry
            self._verified[token] = cached
        claims, base = cached
        if claims["sid"] in self.revocations:
            raise Unauthenticated("session revoked", reason="SESSION_REVOKED")
        return dataclasses.replace(base, request_id=request_id), claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid access token") from None
        return claims

    def _revoke(self, family_id: str) -> None:
        self.revocations.add(family_id)


def require_password_changed(claims: dict[str, object]) -> None:
    """Users created or reset by an admin must change their password before anything else."""
    if claims.get("pwd_change"):
        raise PermissionDenied("password change required before any other call", reason="PASSWORD_CHANGE_REQUIRED")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
