"""Hostile input through every operation of the gateway's OpenAPI document, against the real stack (issue 29).

For each operation the corpus (``corpus.py``: control characters, encodings, nesting, sizes, date and number
edges, injection strings, path tricks, header tricks) goes to every path and query parameter, the body and the
headers, with a role's token; tampered and ``alg: none`` tokens go to every operation. Every answer must be:

- no 5xx: every part is up, so nothing may answer 500, 502, 503 or 504 (a 503 or 504 means a part fell over);
- problem details: every error answer is ``application/problem+json`` with its status;
- no scope leak: a path naming another branch's customer never answers 2xx.

The operations come from the document, so a route added later is probed without a change here. One role walks
the whole corpus (fast enough for every run); every role walks a sample of it (``slow``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from corpus import Operation, Probe, probes, token_tricks
from hostile_stack import Hostile

from crm_gateway.policy import PUBLIC
from crm_testing.demo import ROLE_USERS

# Logging out would revoke the token the rest of the walk uses; logout has its own tests.
SKIPPED = {("POST", "/api/v1/auth/logout")}
WORKERS = 4


def _send(client: httpx.Client, probe: Probe, authorization: str | None) -> httpx.Response:
    headers = dict(probe.headers)
    if authorization is not None:
        headers["Authorization"] = authorization
    url = client.base_url.copy_with(raw_path=probe.raw_path.encode("latin-1"))
    if isinstance(probe.params, str):
        url = url.copy_with(raw_path=probe.raw_path.encode("latin-1") + b"?" + probe.params.encode("latin-1"))
        return client.request(probe.method, url, content=probe.content, headers=headers)
    return client.request(probe.method, url, params=probe.params, content=probe.content, headers=headers)


def _judge(op: Operation, probe: Probe, who: str, reply: httpx.Response, foreign_customer: str) -> list[str]:
    """What is wrong with ``reply`` to ``probe`` (empty when nothing is)."""
    where = f"{probe.method} {op.template} [{probe.label}] as {who} → {reply.status_code}"
    wrong = []
    if reply.status_code >= 500:
        wrong.append(f"{where}: a server error ({reply.text[:200]})")
    if reply.status_code >= 400:
        kind = reply.headers.get("content-type", "")
        if not kind.startswith("application/problem+json"):
            wrong.append(f"{where}: error answered as {kind!r}, not problem details")
        else:
            try:
                status = json.loads(reply.content).get("status")
            except ValueError:
                status = None
            if status != reply.status_code:
                wrong.append(f"{where}: problem details without the status ({reply.text[:120]})")
    if 200 <= reply.status_code < 300 and foreign_customer in probe.raw_path:
        wrong.append(f"{where}: another branch's customer answered (a scope leak)")
    return wrong


def _walk(hostile: Hostile, roles: list[str], *, full: bool) -> list[str]:
    """Send every probe of every operation with each role's token; every failure, described."""
    foreign = hostile.base_ids["customer_id"]
    jobs: list[tuple[Operation, Probe, str, str]] = []
    for op in hostile.operations:
        if (op.method, op.template) in SKIPPED:
            continue
        for probe in probes(op, hostile.base_ids, full=full):
            jobs.extend((op, probe, role, f"Bearer {hostile.tokens[role]}") for role in roles)

    def run(job: tuple[Operation, Probe, str, str]) -> list[str]:
        op, probe, role, authorization = job
        try:
            reply = _send(hostile.client, probe, authorization)
        except httpx.TimeoutException:
            return [f"{probe.method} {op.template} [{probe.label}] as {role}: no answer in time"]
        return _judge(op, probe, role, reply, foreign)

    with ThreadPoolExecutor(WORKERS) as pool:
        failures = [failure for found in pool.map(run, jobs) for failure in found]
    # The walk must not have probed with dead tokens (a lock-out or revocation would make every answer a 401).
    for role in roles:
        me = hostile.client.get("/api/v1/me", headers={"Authorization": f"Bearer {hostile.tokens[role]}"})
        if me.status_code != 200:
            failures.append(f"{role}'s token stopped working during the walk ({me.status_code})")
    return failures


def _report(failures: list[str]) -> str:
    return f"{len(failures)} bad answers:\n" + "\n".join(sorted(set(failures))[:80])


def test_the_corpus_walks_every_operation(hostile: Hostile) -> None:
    """The walk reaches every operation, with a body where the document declares one: a sanity check of the
    walker itself, so an empty document cannot make the suite pass."""
    assert len(hostile.operations) >= 50
    assert all(op.permission for op in hostile.operations), [op.template for op in hostile.operations]
    with_bodies = [op for op in hostile.operations if op.body_schema is not None]
    assert len(with_bodies) >= 20


def test_every_operation_survives_the_whole_corpus_as_a_branch_head(hostile: Hostile) -> None:
    failures = _walk(hostile, ["branch_head"], full=True)
    assert not failures, _report(failures)


@pytest.mark.slow
def test_every_operation_survives_the_corpus_with_every_role(hostile: Hostile) -> None:
    failures = _walk(hostile, list(ROLE_USERS), full=False)
    assert not failures, _report(failures)


def test_tampered_and_unsigned_tokens_are_refused_everywhere(hostile: Hostile) -> None:
    tricks = token_tricks(hostile.tokens["rm"])
    failures = []
    for op in hostile.operations:
        if (op.method, op.template) in SKIPPED:
            continue
        probe = next(p for p in probes(op, hostile.base_ids, full=False) if p.label.startswith("header accept"))
        for label, authorization in tricks.items():
            reply = _send(hostile.client, probe, authorization)
            failures += _judge(op, probe, f"token {label}", reply, hostile.base_ids["customer_id"])
            if op.permission != PUBLIC and reply.status_code != 401:
                failures.append(f"{op.method} {op.template} with token {label} → {reply.status_code}, not 401")
    assert not failures, _report(failures)


DEEP_ROLES = {"branch_head", "admin"}


@pytest.mark.slow
@pytest.mark.parametrize("role", list(ROLE_USERS))
def test_schemathesis_finds_no_server_error_with_any_role(hostile: Hostile, role: str, tmp_path: Path) -> None:
    """Generated input on top of the corpus, with every role's token: deeper (12 examples per operation) as the
    branch head, who reaches every customer route, and the admin, who reaches every admin route; 3 for the rest,
    whose reach is a subset (the suite's time stays within budget)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{hostile.stack.url}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12" if role in DEEP_ROLES else "3",
            "--seed",
            "20261207",
            "--header",
            f"Authorization: Bearer {hostile.tokens[role]}",
            "--exclude-path",
            "/api/v1/auth/logout",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
