"""The event catalogue (docs/events.md, docs/events.schema.json) is current, complete and true to the wire.

It is generated from protos/ by tools/gen_event_catalogue.py; these tests check that the committed files are what
the protos produce, that every subject the code names is in it, and that real payloads, converted to protobuf's
canonical JSON, validate against their schemas while a payload with a field the message lacks does not.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from jsonschema import Draft202012Validator, FormatChecker

from crm.common.v1 import dead_letter_pb2, envelope_pb2, money_pb2
from crm.customer.v1 import customer_pb2
from crm.customer.v1 import events_pb2 as customer_events
from crm.identity.v1 import events_pb2 as identity_events
from crm.interaction.v1 import events_pb2 as interaction_events
from crm.interaction.v1 import interaction_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tools" / "gen_event_catalogue.py"
SCHEMA_FILE = ROOT / "docs" / "events.schema.json"
SUBJECT = re.compile(r"^crm\.[a-z_]+\.[a-z_]+\.[a-z_]+$")
SOURCES = ("services/*/src/**/*.py", "gateway/src/**/*.py", "libs/platform/src/**/*.py")
TYPE_URL_PREFIX = "type.crm/"


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    assert SCHEMA_FILE.exists(), f"{SCHEMA_FILE} is missing; run `make catalogue`"
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


# -- (a) the committed catalogue is what the protos produce --------------------------------------------------------


def test_committed_catalogue_is_current() -> None:
    result = generate("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def _small_tree(root: Path, events_proto: str) -> Path:
    """A proto tree of its own: the shared common protos and one ticket events.proto."""
    protos = root / "protos"
    shutil.copytree(ROOT / "protos" / "crm" / "common", protos / "crm" / "common")
    (protos / "crm" / "ticket" / "v1").mkdir(parents=True)
    (protos / "crm" / "ticket" / "v1" / "events.proto").write_text(
        'syntax = "proto3";\n\npackage crm.ticket.v1;\n\nimport "crm/common/v1/money.proto";\n\n' + events_proto,
        encoding="utf-8",
    )
    return protos


GOOD_EVENTS = """
// Part is used inside an event only.
message Part {
  // amount of it.
  crm.common.v1.Money amount = 1;
}

// Thing is published on `crm.ticket.thing.made` and `.unmade`.
message Thing {
  // id of the thing.
  string id = 1;
  // parts of it.
  repeated Part parts = 2;
}
"""


def test_check_names_the_stale_file(tmp_path: Path) -> None:
    protos, out = _small_tree(tmp_path, GOOD_EVENTS), tmp_path / "docs"
    made = generate("--protos", str(protos), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert generate("--protos", str(protos), "--out", str(out), "--check").returncode == 0
    markdown = out / "events.md"
    markdown.write_text(markdown.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    stale = generate("--protos", str(protos), "--out", str(out), "--check")
    assert stale.returncode == 1
    assert str(markdown) in stale.stderr
    assert "events.schema.json" not in stale.stderr
    subjects = json.loads((out / "events.schema.json").read_text(encoding="utf-8"))["subjects"]
    assert sorted(subjects) == ["crm.dlq.<consumer>", "crm.ticket.thing.made", "crm.ticket.thing.unmade"]


@pytest.mark.parametrize(
    ("events_proto", "named"),
    [
        (GOOD_EVENTS + "\n// Orphan says something happened.\nmessage Orphan {\n  string id = 1;\n}\n", "Orphan"),
        ("// Stray is published on `crm.nowhere.stray.seen`.\nmessage Stray {\n  string id = 1;\n}\n", "Stray"),
        ("// Bad is published on `crm.ticket.Bad`.\nmessage Bad {\n  string id = 1;\n}\n", "Bad"),
    ],
    ids=["no-subject", "no-stream", "malformed"],
)
def test_generator_refuses_an_event_it_cannot_place(tmp_path: Path, events_proto: str, named: str) -> None:
    protos = _small_tree(tmp_path, events_proto)
    result = generate("--protos", str(protos), "--out", str(tmp_path / "docs"))
    assert result.returncode == 1
    assert f"crm.ticket.v1.{named}" in result.stderr
    assert not (tmp_path / "docs").exists()


# -- (b) every subject the code names is catalogued ----------------------------------------------------------------


def _source_strings() -> Iterator[tuple[str, int, ast.Constant | ast.JoinedStr]]:
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            in_fstring = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr) or (
                    isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring
                ):
                    yield str(path.relative_to(ROOT)), node.lineno, node


def test_every_subject_the_code_names_is_catalogued(catalogue: dict[str, Any]) -> None:
    subjects = set(catalogue["subjects"])
    patterns = [re.compile(e["pattern"]) for e in catalogue["subjects"].values() if "pattern" in e]
    missing = []
    checked = 0
    for where, line, node in _source_strings():
        if isinstance(node, ast.Constant):
            if SUBJECT.match(node.value):
                checked += 1
                if node.value not in subjects and not any(p.match(node.value) for p in patterns):
                    missing.append(f"{where}:{line}: {node.value}")
            continue
        first = node.values[0] if node.values else None
        prefix = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
        if not re.match(r"^crm\.[a-z_]+\.", prefix) or " " in prefix:
            continue  # not a subject (or only `crm.{…}`, which says nothing)
        checked += 1
        if not any(s.startswith(prefix) for s in subjects):
            missing.append(f"{where}:{line}: f-string {prefix}{{…}}")
    assert checked > 10, "the scan found almost no subjects: are the source globs right?"
    assert not missing, "subjects the code names but the catalogue lacks:\n" + "\n".join(missing)


# -- (c) real payloads validate against their schemas --------------------------------------------------------------


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def _payload_schema(catalogue: dict[str, Any], subject: str, message: Message) -> dict[str, Any]:
    entry = catalogue["subjects"][subject]
    assert entry["message"] == message.DESCRIPTOR.full_name
    return entry["schema"]


def _money(amount: str) -> money_pb2.Money:
    return money_pb2.Money(amount=amount, currency="CNY")


CREATED = customer_events.CustomerCreated(
    customer_id="c-1",
    kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
    owner_id="u-rm1",
    branch_id="BJ001",
    team_id="T1",
    region="north",
    tier=customer_pb2.TIER_GOLD,
    source_channel=customer_pb2.SOURCE_CHANNEL_LOBBY,
    do_not_disturb=True,
)
HOLDINGS = customer_events.CustomerHoldingsChanged(
    customer_id="c-1",
    aum_before=_money("100000.00"),
    aum_after=_money("600000.50"),
    signals=["large_inflow", "tier_threshold_reached"],
    maturing_product_codes=["TD-3M"],
    eligible_tier=customer_pb2.TIER_PLATINUM,
    balances=[
        customer_events.ProductBalance(product_type=customer_pb2.PRODUCT_TYPE_DEPOSIT, balance=_money("500000.50")),
        customer_events.ProductBalance(product_type=customer_pb2.PRODUCT_TYPE_WEALTH, balance=_money("100000")),
    ],
    maturities=[
        customer_events.ProductMaturity(
            product_code="TD-3M",
            product_type=customer_pb2.PRODUCT_TYPE_TIME_DEPOSIT,
            maturity_date="2026-03-31",
            amount=_money("100000.00"),
        )
    ],
)
UPDATED = customer_events.CustomerUpdated(customer_id="c-1", changed_fields=["mobile"], version=7)
CALENDAR = identity_events.CalendarChanged(
    branch_id="BJ001",
    calendar=identity_events.BusinessCalendar(
        time_zone="Asia/Shanghai",
        weekly=[identity_events.WorkingInterval(weekday="mon", start="09:00", end="17:00")],
        holidays=["2026-10-01"],
    ),
    version=2,
)
LOGGED = interaction_events.InteractionLogged(
    interaction_id="i-1",
    customer_id="c-1",
    channel=interaction_pb2.CHANNEL_PHONE,
    logged_by="u-rm1",
    occurred_at=timestamp_pb2.Timestamp(seconds=1_767_225_600, nanos=500_000_000),
)
CONTACT = identity_events.StaffContactChanged(user_id="u-1", sealed=b"\x00\xffsealed")
DEAD = dead_letter_pb2.DeadLetter(
    consumer="interaction-customer-directory",
    original_subject="crm.customer.customer.created",
    original_envelope=b"\x0a\x01x",
    error="boom",
    deliveries=5,
)
PAYLOADS = [
    ("crm.customer.customer.created", CREATED),
    ("crm.customer.customer.holdings_changed", HOLDINGS),
    ("crm.customer.customer.updated", UPDATED),
    ("crm.identity.calendar.announced", CALENDAR),
    ("crm.interaction.interaction.logged", LOGGED),
    ("crm.identity.user.contact_changed", CONTACT),
    ("crm.dlq.<consumer>", DEAD),
]


@pytest.mark.parametrize(("subject", "message"), PAYLOADS, ids=[s for s, _ in PAYLOADS])
def test_a_real_payload_validates(catalogue: dict[str, Any], subject: str, message: Message) -> None:
    validator = _validator(_payload_schema(catalogue, subject, message))
    payload = _as_json(message)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]
    assert not errors, errors


def test_the_json_mapping_is_the_canonical_one(catalogue: dict[str, Any]) -> None:
    holdings = _as_json(HOLDINGS)
    assert holdings["aumAfter"] == {"amount": "600000.50", "currency": "CNY"}
    assert holdings["balances"][0]["productType"] == "PRODUCT_TYPE_DEPOSIT"
    assert _as_json(UPDATED)["version"] == "7"  # int64 as a string
    schema = _payload_schema(catalogue, "crm.customer.customer.updated", UPDATED)
    assert schema["properties"]["version"]["type"] == "string"
    assert schema["properties"]["changedFields"]["type"] == "array"
    created = _payload_schema(catalogue, "crm.customer.customer.created", CREATED)
    assert "TIER_GOLD" in created["properties"]["tier"]["enum"]
    contact = _payload_schema(catalogue, "crm.identity.user.contact_changed", CONTACT)
    assert contact["properties"]["sealed"]["contentEncoding"] == "base64"
    logged = _payload_schema(catalogue, "crm.interaction.interaction.logged", LOGGED)
    assert logged["properties"]["occurredAt"]["format"] == "date-time"


@pytest.mark.parametrize(
    ("subject", "message", "change"),
    [
        ("crm.customer.customer.created", CREATED, lambda d: d.update(nickname="x")),
        ("crm.customer.customer.holdings_changed", HOLDINGS, lambda d: d["balances"][0].update(cost="1")),
        ("crm.customer.customer.holdings_changed", HOLDINGS, lambda d: d["aumAfter"].update(rate="1.0")),
        ("crm.customer.customer.holdings_changed", HOLDINGS, lambda d: d["aumAfter"].update(amount=600000.5)),
        ("crm.customer.customer.created", CREATED, lambda d: d.update(tier="TIER_BRONZE")),
        ("crm.customer.customer.created", CREATED, lambda d: d.update(customer_id="c-1")),
        ("crm.customer.customer.updated", UPDATED, lambda d: d.update(version=7)),
    ],
    ids=[
        "unknown-field",
        "unknown-nested-field",
        "unknown-money-field",
        "float-money",
        "bad-enum",
        "snake-case",
        "int64-number",
    ],
)
def test_a_payload_the_message_does_not_declare_fails(
    catalogue: dict[str, Any], subject: str, message: Message, change: Any
) -> None:
    validator = _validator(_payload_schema(catalogue, subject, message))
    payload = _as_json(message)
    change(payload)
    assert not validator.is_valid(payload)


def test_a_whole_envelope_validates(catalogue: dict[str, Any]) -> None:
    validator = _validator(catalogue["envelope"])
    payload = any_pb2.Any()
    payload.Pack(HOLDINGS, type_url_prefix=TYPE_URL_PREFIX)
    envelope = envelope_pb2.EventEnvelope(
        id="0190a000-0000-7000-8000-000000000001",
        type="crm.customer.customer.holdings_changed",
        source="customer",
        occurred_at=timestamp_pb2.Timestamp(seconds=1_767_225_600),
        subject_id="c-1",
        actor="u-rm1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        schema_version=1,
        payload=payload,
    )
    body = _as_json(envelope)
    assert body["payload"]["@type"] == f"{TYPE_URL_PREFIX}crm.customer.v1.CustomerHoldingsChanged"
    assert not [e.message for e in validator.iter_errors(body)]
    body["payload"]["extra"] = 1
    assert not validator.is_valid(body)
    body["payload"].pop("extra")
    body["spare"] = "x"
    assert not validator.is_valid(body)


# -- the catalogue's own shape -------------------------------------------------------------------------------------


def _objects(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if "properties" in schema:
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _objects(item)


def test_every_schema_is_draft_2020_12_and_closed(catalogue: dict[str, Any]) -> None:
    schemas = {"envelope": catalogue["envelope"]} | {s: e["schema"] for s, e in catalogue["subjects"].items()}
    open_objects = []
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        for obj in _objects(schema):
            if obj.get("additionalProperties") is not False and set(obj["properties"]) != {"@type"}:
                open_objects.append(f"{name}: {obj.get('title', obj)}")
    assert not open_objects, open_objects


def test_every_subject_has_a_stream_and_the_dead_letters_are_a_pattern(catalogue: dict[str, Any]) -> None:
    entries = catalogue["subjects"]
    assert all(e["stream"].startswith("CRM_") for e in entries.values())
    dlq = entries["crm.dlq.<consumer>"]
    assert dlq["stream"] == "CRM_DLQ"
    assert dlq["message"] == "crm.common.v1.DeadLetter"
    assert re.match(dlq["pattern"], "crm.dlq.interaction-customer-directory")
    assert not re.match(dlq["pattern"], "crm.dlq.a.b")
    assert all(SUBJECT.match(s) for s in entries if s != "crm.dlq.<consumer>")
