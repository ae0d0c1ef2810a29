"""Bearer tokens of an external OIDC provider, verified against a JWKS served on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway_harness import Gateway

ISSUER = "https://sso.bank.example"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


@pytest.fixture
def gateway_env(jwks_url: str) -> dict[str, str]:
    return {"CRM_GATEWAY_OIDC_ISSUER": ISSUER, "CRM_GATEWAY_OIDC_JWKS_URL": jwks_url}


def _token(key: Any = _KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "crm",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "rm1",
        "roles": ["rm", "superuser"],
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


async def test_provider_token_maps_to_crm_identity(gateway: Gateway) -> None:
    reply = await gateway.client.get("/api/v1/me", headers={"Authorization": f"Bearer {_token()}"})
    assert reply.status_code == 200, reply.text
    me = reply.json()
    assert me["roles"] == ["rm"]  # unknown roles from the provider grant nothing
    assert me["branch_id"] == "BJ001" and me["team_id"] == "T1" and me["scope"] == "own"


@pytest.mark.parametrize(
    "token",
    [
        _token(key=_OTHER_KEY),  # signed by a key the provider does not publish
        _token(aud="another-app"),
        _token(exp=int(time.time()) - 10),
        _token(preferred_username="stranger"),  # not a CRM user
    ],
    ids=["foreign-key", "wrong-audience", "expired", "unknown-user"],
)
async def test_bad_provider_tokens_are_refused(gateway: Gateway, token: str) -> None:
    reply = await gateway.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 401
