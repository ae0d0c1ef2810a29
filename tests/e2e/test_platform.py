"""End to end over the platform's shared pieces, as branch staff use them through the gateway on the real stack
(``make run``'s processes, embedded NATS, SQLite per service):

* a customer created a moment ago is known everywhere at once: create, then log a call on it, 200 times in a row,
  never a 404 (the interaction service asks the customer service before the event arrives);
* scope per permission: a teller who is also a lobby manager reads customers in the teller's ``own`` scope, never
  in the lobby manager's ``branch`` scope;
* personal values stay encrypted in every service's database and off the event stream: a scan of every SQLite
  file and of the NATS store finds none of them in the clear.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from conftest import Stack

from crm_platform.identifiers import resident_id_check_char

pytestmark = pytest.mark.slow

PASSWORD = "Demo-Passw0rd!"


def _login(client: httpx.Client, user: str, password: str = PASSWORD) -> dict[str, str]:
    reply = client.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def _resident_id(birth: str, serial: int) -> str:
    body = f"110105{birth.replace('-', '')}{serial:03d}"
    return body + resident_id_check_char(body)


def test_a_new_customer_is_known_everywhere_at_once(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        rm1 = _login(client, "rm1")
        for n in range(200):
            created = client.post("/api/v1/customers", json={"kind": "individual", "name": f"即刻{n}"}, headers=rm1)
            assert created.status_code == 201, created.text
            customer_id = created.json()["id"]
            logged = client.post(
                f"/api/v1/customers/{customer_id}/interactions",
                json={"channel": "phone", "summary": f"来电咨询大额存单 {n}"},
                headers=rm1,
            )
            assert logged.status_code == 201, f"call {n}: {logged.status_code} {logged.text}"
            assert logged.json()["customer_id"] == customer_id
        listed = client.get(f"/api/v1/customers/{customer_id}/interactions", headers=rm1)
        assert listed.status_code == 200 and listed.json()["items"][0]["summary"] == "来电咨询大额存单 199"


def test_a_teller_who_is_also_a_lobby_manager_reads_only_their_own_customers(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        admin = _login(client, "admin")
        made = client.post(
            "/api/v1/admin/users",
            json={
                "username": "tl01",
                "display_name": "柜员兼大堂",
                "branch_id": "BJ001",
                "team_id": "T1",
                "roles": ["teller", "lobby_manager"],
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        temporary = made.json()["temporary_password"]
        first = _login(client, "tl01", temporary)
        changed = client.post(
            "/api/v1/auth/password",
            json={"current_password": temporary, "new_password": "Teller-Lobby-2026!"},
            headers=first,
        )
        assert changed.status_code == 200, changed.text
        both = {"Authorization": f"Bearer {changed.json()['access_token']}"}

        rm1 = _login(client, "rm1")
        others = client.post("/api/v1/customers", json={"kind": "individual", "name": "网点客户"}, headers=rm1)
        assert others.status_code == 201
        mine = client.post("/api/v1/customers", json={"kind": "individual", "name": "柜员客户"}, headers=both)
        assert mine.status_code == 201, mine.text  # a teller owns what they create

        me = client.get("/api/v1/me", headers=both).json()
        assert me["scopes"]["customer:read"] == "own"  # from the teller, the one role granting it
        listed = client.get("/api/v1/customers?limit=500", headers=both)
        assert listed.status_code == 200, listed.text
        assert {c["id"] for c in listed.json()["items"]} == {mine.json()["id"]}
        assert client.get(f"/api/v1/customers/{others.json()['id']}", headers=both).status_code == 404


def test_personal_values_are_in_no_database_and_no_stream_in_the_clear(stack: Stack) -> None:
    birth = "1988-03-14"
    id_number = _resident_id(birth, 417)
    mobile = "13912345678"
    summary = "客户说起女儿留学汇款的难处"  # the customer's words, in an interaction
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        rm1 = _login(client, "rm1")
        created = client.post(
            "/api/v1/customers",
            json={
                "kind": "individual",
                "name": "陈静",
                "id_type": "resident_id",
                "id_number": id_number,
                "birth_date": birth,
                "mobile": mobile,
            },
            headers=rm1,
        )
        assert created.status_code == 201, created.text
        customer_id = created.json()["id"]
        logged = client.post(
            f"/api/v1/customers/{customer_id}/interactions",
            json={"channel": "visit", "summary": summary, "occurred_at": dt.datetime.now(dt.UTC).isoformat()},
            headers=rm1,
        )
        assert logged.status_code == 201, logged.text
        assert (
            client.get(f"/api/v1/customers/{customer_id}/interactions", headers=rm1).json()["items"][0]["summary"]
            == summary
        )  # readable to the RM through the service

    data_dir = stack.log.parent / "var"
    stores = [p for p in data_dir.rglob("*") if p.is_file() and (p.suffix in {".db", ".db-wal"} or "nats" in p.parts)]
    assert any(p.name == "interaction.db" for p in stores), sorted(str(p) for p in stores)
    needles = {
        "id_number": id_number.encode(),
        "mobile": mobile.encode(),
        "summary": summary.encode(),
    }
    found = [
        f"{name} in {path.relative_to(data_dir)}"
        for path in stores
        for name, needle in needles.items()
        if needle in Path(path).read_bytes()
    ]
    assert not found, found
