"""Generate the event catalogue from protos/ (``make catalogue``), or check that the committed one is current.

``python tools/gen_event_catalogue.py`` writes ``docs/events.md`` (for people: per domain, every subject with its
stream, payload message, meaning and fields) and ``docs/events.schema.json`` (for machines: the JSON Schema,
draft 2020-12, of the envelope and of every subject's payload in protobuf's canonical JSON mapping).
``--check`` writes nothing and exits 1 naming each file that differs from what the protos produce.
``--protos DIR`` and ``--out DIR`` point at another proto tree and output folder (the tests use them).

An *event message* is a message whose leading comment says where it is published::

    // CustomerCreated is published on `crm.customer.customer.created`.
    // UserChanged is published on `crm.identity.user.created`, `.updated` and `.announced`, ...

(a subject starting with a dot replaces the last token of the previous full one; a token written ``<name>``,
as in ``crm.dlq.<consumer>``, makes the subject a pattern). Every other message is a nested type, described
under ``$defs`` where an event uses it. It is an error, so the generator exits 1 naming the message, when

* a top-level message of an ``events.proto`` (or of ``common/v1/dead_letter.proto``) that no other message uses
  as a field type does not say where it is published, or a message anywhere names a subject in its comment
  without saying "is published on" (an event the catalogue would miss);
* a subject is malformed, named by two messages, or captured by no stream of ``crm_platform.bus.DOMAIN_STREAMS``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from crm_platform.bus import DOMAIN_STREAMS
from crm_platform.outbox import TYPE_URL_PREFIX

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DOCS = ROOT / "docs"
MARKDOWN = "events.md"
SCHEMA = "events.schema.json"

ENVELOPE = "crm.common.v1.EventEnvelope"
MONEY = "crm.common.v1.Money"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

SUBJECT_RE = re.compile(r"^crm\.[a-z_]+\.[a-z_]+\.[a-z_]+$")
PATTERN_TOKEN_RE = re.compile(r"^<[a-z_]+>$")
NAME_TOKEN_RE = re.compile(r"^[a-z_]+$")
PUBLISHED_RE = re.compile(r"is published on\s+(`[^`]+`(?:\s*(?:,\s*(?:and\s+)?|and\s+)`[^`]+`)*)")
MENTIONED_SUBJECT_RE = re.compile(r"\bcrm\.[a-z_]+\.[a-z_]+\.[a-z_]+\b")
PLACEHOLDER_RE = r"[^.*>\s]+"  # what a placeholder token of a pattern subject may be

FD = descriptor_pb2.FieldDescriptorProto
# Canonical proto3 JSON of the scalar types: 64-bit integers are strings, 32-bit ones numbers.
SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]},
    FD.TYPE_FLOAT: {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]},
    FD.TYPE_INT64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FD.TYPE_SINT64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FD.TYPE_SFIXED64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FD.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$"},
    FD.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]+$"},
    FD.TYPE_INT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FD.TYPE_SINT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FD.TYPE_SFIXED32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FD.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FD.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
SCALAR_NAMES = {
    value: name.removeprefix("TYPE_").lower() for name, value in FD.Type.items() if name not in ("TYPE_GROUP",)
}
WRAPPERS = {
    "google.protobuf.DoubleValue": FD.TYPE_DOUBLE,
    "google.protobuf.FloatValue": FD.TYPE_FLOAT,
    "google.protobuf.Int64Value": FD.TYPE_INT64,
    "google.protobuf.UInt64Value": FD.TYPE_UINT64,
    "google.protobuf.Int32Value": FD.TYPE_INT32,
    "google.protobuf.UInt32Value": FD.TYPE_UINT32,
    "google.protobuf.BoolValue": FD.TYPE_BOOL,
    "google.protobuf.StringValue": FD.TYPE_STRING,
    "google.protobuf.BytesValue": FD.TYPE_BYTES,
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Value": {},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
}
# Money travels as an exact decimal string and an ISO 4217 code (docs/architecture.md, "HTTP").
MONEY_FIELDS: dict[str, dict[str, Any]] = {
    "amount": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
}


class CatalogueError(Exception):
    """The protos break a catalogue rule; the message names the proto message and file."""


@dataclass
class Message:
    """One message of the proto tree, with the comments protoc kept."""

    full_name: str
    file: str
    proto: descriptor_pb2.DescriptorProto
    comment: str
    field_comments: dict[str, str]
    top_level: bool


@dataclass
class Enum:
    """One enum of the proto tree."""

    full_name: str
    values: list[str]
    comment: str


@dataclass
class Event:
    """An event message and the subjects its comment names."""

    message: Message
    subjects: list[str]
    streams: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.message.full_name.split(".")[1]


# -- reading the protos -------------------------------------------------------------------------------------------


def load(protos: Path) -> tuple[dict[str, Message], dict[str, Enum]]:
    """Every message and enum of the tree (and of its imports), with comments, keyed by full name."""
    files = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = ["protoc", f"-I{protos}", f"-I{include}", "--include_imports", "--include_source_info"]
        if protoc.main([*args, f"--descriptor_set_out={out}", *files]) != 0:
            raise CatalogueError("protoc failed")
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    messages: dict[str, Message] = {}
    enums: dict[str, Enum] = {}
    for file in descriptor_set.file:
        comments = {
            tuple(loc.path): _clean(loc.leading_comments or loc.trailing_comments)
            for loc in file.source_code_info.location
        }
        for i, msg in enumerate(file.message_type):
            _add_message(msg, file.name, file.package, (4, i), comments, messages, enums, top_level=True)
        for i, enum in enumerate(file.enum_type):
            _add_enum(enum, file.package, (5, i), comments, enums)
    return messages, enums


def _add_message(
    msg: descriptor_pb2.DescriptorProto,
    file: str,
    scope: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    messages: dict[str, Message],
    enums: dict[str, Enum],
    *,
    top_level: bool,
) -> None:
    name = f"{scope}.{msg.name}"
    field_comments = {f.name: comments.get((*path, 2, i), "") for i, f in enumerate(msg.field)}
    messages[name] = Message(name, file, msg, comments.get(path, ""), field_comments, top_level)
    for i, nested in enumerate(msg.nested_type):
        _add_message(nested, file, name, (*path, 3, i), comments, messages, enums, top_level=False)
    for i, enum in enumerate(msg.enum_type):
        _add_enum(enum, name, (*path, 4, i), comments, enums)


def _add_enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    scope: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    enums: dict[str, Enum],
) -> None:
    name = f"{scope}.{enum.name}"
    enums[name] = Enum(name, [v.name for v in enum.value], comments.get(path, ""))


def _clean(comment: str) -> str:
    """A proto comment as one line of text."""
    return " ".join(comment.split())


def find_events(messages: dict[str, Message], protos: Path) -> list[Event]:
    """The event messages, checked against the catalogue's rules (raises naming every offender)."""
    own_files = {str(p.relative_to(protos)) for p in protos.rglob("*.proto")}
    used_as_field = {
        f.type_name.lstrip(".")
        for m in messages.values()
        for f in m.proto.field
        if f.type == FD.TYPE_MESSAGE and f.type_name.lstrip(".") != m.full_name
    }
    errors: list[str] = []
    events: list[Event] = []
    for msg in sorted(messages.values(), key=lambda m: m.full_name):
        if msg.file not in own_files:
            continue
        where = f"{_shown(protos / msg.file)}: message {msg.full_name}"
        published = "is published on" in msg.comment
        if not published:
            nested = msg.full_name in used_as_field or not msg.top_level
            if not nested and _is_event_file(msg.file):
                errors.append(
                    f"{where} is an event message (no other message uses it as a field type) but its comment does"
                    f' not say where it is published; begin the comment with "{msg.proto.name} is published on'
                    ' `crm.<domain>.<entity>.<verb>`."'
                )
            elif not nested and (mentioned := MENTIONED_SUBJECT_RE.findall(msg.comment)):
                errors.append(
                    f"{where} names the subject {', '.join(mentioned)} but not as"
                    f' "{msg.proto.name} is published on `<subject>`", so the catalogue would miss the event'
                )
            continue
        try:
            subjects = parse_subjects(msg.comment)
        except CatalogueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        events.append(Event(msg, subjects))
    owners: dict[str, str] = {}
    for event in events:
        where = f"{_shown(protos / event.message.file)}: message {event.message.full_name}"
        for subject in event.subjects:
            if subject in owners:
                errors.append(f"{where} names `{subject}`, already the subject of {owners[subject]}")
            owners[subject] = event.message.full_name
            streams = [s.name for s in DOMAIN_STREAMS if any(_captures(f, _nats_form(subject)) for f in s.subjects)]
            if len(streams) != 1:
                errors.append(
                    f"{where}: subject `{subject}` is captured by"
                    f" {'no stream' if not streams else 'several streams: ' + ', '.join(streams)} of"
                    " crm_platform.bus.DOMAIN_STREAMS"
                )
            else:
                event.streams[subject] = streams[0]
    if errors:
        raise CatalogueError("\n".join(errors))
    return events


def _shown(path: Path) -> str:
    """A path as the messages show it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _is_event_file(path: str) -> bool:
    return path.endswith("/events.proto") or path == "crm/common/v1/dead_letter.proto"


def parse_subjects(comment: str) -> list[str]:
    """The subjects after "is published on": full ones, and `.verb` suffixes replacing the previous one's last token."""
    match = PUBLISHED_RE.search(comment)
    if match is None:
        raise CatalogueError("its comment says `is published on` but names no subject in backquotes after it")
    subjects: list[str] = []
    last = ""
    for token in re.findall(r"`([^`]+)`", match.group(1)):
        if token.startswith("."):
            if not last:
                raise CatalogueError(f"suffix `{token}` follows no full subject")
            subject = last.rsplit(".", 1)[0] + token
        else:
            subject = last = token
        if not is_subject(subject) and not is_pattern(subject):
            raise CatalogueError(f"`{subject}` is not a subject `crm.<domain>.<entity>.<verb>` nor a pattern")
        if subject in subjects:
            raise CatalogueError(f"`{subject}` is named twice")
        subjects.append(subject)
    return subjects


def is_subject(subject: str) -> bool:
    """Whether ``subject`` is a concrete subject `crm.<domain>.<entity>.<verb>`."""
    return SUBJECT_RE.match(subject) is not None


def is_pattern(subject: str) -> bool:
    """Whether ``subject`` is a pattern such as `crm.dlq.<consumer>` (one or more `<name>` tokens)."""
    tokens = subject.split(".")
    return (
        len(tokens) >= 3
        and tokens[0] == "crm"
        and NAME_TOKEN_RE.match(tokens[1]) is not None
        and all(NAME_TOKEN_RE.match(t) or PATTERN_TOKEN_RE.match(t) for t in tokens[2:])
        and any(PATTERN_TOKEN_RE.match(t) for t in tokens[2:])
    )


def _nats_form(subject: str) -> str:
    """A pattern subject as a NATS subscription subject (`<name>` tokens become `*`)."""
    return ".".join("*" if PATTERN_TOKEN_RE.match(t) else t for t in subject.split("."))


def _regex_form(subject: str) -> str:
    """A pattern subject as an anchored regular expression of the subjects it stands for."""
    tokens = subject.split(".")
    return "^" + "\\.".join(PLACEHOLDER_RE if PATTERN_TOKEN_RE.match(t) else re.escape(t) for t in tokens) + "$"


def _captures(stream_filter: str, subject: str) -> bool:
    """Whether a stream filter (`*`, `>` wildcards) captures every subject ``subject`` (maybe with `*`) stands for."""
    want, have = stream_filter.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)


# -- JSON Schema ----------------------------------------------------------------------------------------------------


class SchemaBuilder:
    """JSON Schemas (draft 2020-12) of messages in protobuf's canonical JSON mapping; nested messages in $defs."""

    def __init__(self, messages: dict[str, Message], enums: dict[str, Enum]) -> None:
        self.messages = messages
        self.enums = enums

    def document(self, root: str, extra_defs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The schema of message ``root``: its object inline, every message it reaches under $defs."""
        defs: dict[str, dict[str, Any]] = {}
        schema = {"$schema": DRAFT, **self.object_schema(root, defs)}
        defs.update(extra_defs or {})
        if defs:
            schema["$defs"] = defs
        return schema

    def object_schema(self, name: str, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The object schema of message ``name``, adding the messages it uses to ``defs``."""
        msg = self.messages[name]
        properties: dict[str, Any] = {}
        for f in msg.proto.field:
            value = self.field_schema(f, defs)
            if msg.full_name == MONEY and f.name in MONEY_FIELDS:
                value = dict(MONEY_FIELDS[f.name])
            if comment := msg.field_comments.get(f.name):
                value = {"description": comment, **value}
            properties[f.json_name] = value
        schema: dict[str, Any] = {"title": name}
        if msg.comment:
            schema["description"] = msg.comment
        schema |= {"type": "object", "properties": properties, "additionalProperties": False}
        exclusive = self._oneof_groups(msg)
        if exclusive:
            # At most one field of a oneof is set (and so written).
            schema["not"] = {"anyOf": [{"required": [a, b]} for group in exclusive for a, b in _pairs(group)]}
        return schema

    def field_schema(self, f: descriptor_pb2.FieldDescriptorProto, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The schema of one field's JSON value."""
        if f.type == FD.TYPE_MESSAGE:
            entry = self.messages[f.type_name.lstrip(".")]
            if entry.proto.options.map_entry:
                key, value = entry.proto.field
                return {
                    "type": "object",
                    "propertyNames": self.single_schema(key, defs),
                    "additionalProperties": self.single_schema(value, defs),
                }
        single = self.single_schema(f, defs)
        if f.label == FD.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def single_schema(self, f: descriptor_pb2.FieldDescriptorProto, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The schema of one value of a field's type (one element of a repeated field)."""
        if f.type in SCALARS:
            return dict(SCALARS[f.type])
        type_name = f.type_name.lstrip(".")
        if f.type == FD.TYPE_ENUM:
            enum = self.enums[type_name]
            return {"title": type_name, "type": "string", "enum": list(enum.values)}
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name in WRAPPERS:
            return dict(SCALARS[WRAPPERS[type_name]])
        if type_name == "google.protobuf.Any":
            return {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
            }
        if type_name not in defs:
            defs[type_name] = {}  # reserve the name first: a message may reach itself
            defs[type_name] = self.object_schema(type_name, defs)
        return {"$ref": f"#/$defs/{type_name}"}

    @staticmethod
    def _oneof_groups(msg: Message) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for f in msg.proto.field:
            if f.HasField("oneof_index") and not f.proto3_optional:
                groups.setdefault(f.oneof_index, []).append(f.json_name)
        return [g for _, g in sorted(groups.items()) if len(g) > 1]


def _pairs(items: list[str]) -> Iterator[tuple[str, str]]:
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            yield a, b


def envelope_schema(builder: SchemaBuilder, events: list[Event]) -> dict[str, Any]:
    """The envelope's schema; its payload (a packed Any) is one of the event messages, with its `@type`."""
    defs: dict[str, dict[str, Any]] = {}
    schema = {"$schema": DRAFT, **builder.object_schema(ENVELOPE, defs)}
    variants = []
    for event in sorted(events, key=lambda e: e.message.full_name):
        name = event.message.full_name
        body = builder.object_schema(name, defs)
        type_url = {"description": "The payload's type URL.", "const": f"{TYPE_URL_PREFIX}{name}"}
        body["properties"] = {"@type": type_url, **body["properties"]}
        body["required"] = ["@type"]
        defs[f"payload.{name}"] = body
        variants.append({"$ref": f"#/$defs/payload.{name}"})
    payload_field = next(f for f in builder.messages[ENVELOPE].proto.field if f.name == "payload")
    payload = schema["properties"][payload_field.json_name]
    schema["properties"][payload_field.json_name] = {"description": payload.get("description", ""), "oneOf": variants}
    schema["$defs"] = defs
    return schema


def build_schema_document(messages: dict[str, Message], enums: dict[str, Enum], events: list[Event]) -> dict[str, Any]:
    """The content of docs/events.schema.json."""
    builder = SchemaBuilder(messages, enums)
    subjects: dict[str, Any] = {}
    for event in events:
        for subject in event.subjects:
            entry: dict[str, Any] = {
                "stream": event.streams[subject],
                "message": event.message.full_name,
                "description": event.message.comment,
                "schema": builder.document(event.message.full_name),
            }
            if is_pattern(subject):
                entry["pattern"] = _regex_form(subject)
                entry["nats_subject"] = _nats_form(subject)
            subjects[subject] = entry
    return {
        "$comment": "Generated by tools/gen_event_catalogue.py from protos/; do not edit (make catalogue).",
        "envelope": envelope_schema(builder, events),
        "subjects": dict(sorted(subjects.items())),
    }


# -- Markdown -------------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, `<` outside code spans escaped."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _type_name(f: descriptor_pb2.FieldDescriptorProto, messages: dict[str, Message], package: str) -> str:
    def short(name: str) -> str:
        return name.removeprefix(package + ".") if name.startswith(package + ".") else name

    type_name = f.type_name.lstrip(".")
    if f.type == FD.TYPE_MESSAGE and messages[type_name].proto.options.map_entry:
        key, value = messages[type_name].proto.field
        return f"map<{_type_name(key, messages, package)}, {_type_name(value, messages, package)}>"
    base = short(type_name) if f.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM) else SCALAR_NAMES[f.type]
    return f"repeated {base}" if f.label == FD.LABEL_REPEATED else base


def _fields_cell(msg: Message, messages: dict[str, Message]) -> str:
    package = msg.full_name.rsplit(".", 1)[0]
    lines = []
    for f in msg.proto.field:
        comment = msg.field_comments.get(f.name, "")
        line = f"`{f.name}`: `{_type_name(f, messages, package)}`"
        lines.append(f"{line} — {_md(comment)}" if comment else line)
    return "<br>".join(lines) or "—"


def _used_types(name: str, messages: dict[str, Message], seen: set[str], enums: set[str]) -> None:
    """Collect the messages (``seen``) and enums a message reaches through its fields."""
    for f in messages[name].proto.field:
        type_name = f.type_name.lstrip(".")
        if f.type == FD.TYPE_ENUM:
            enums.add(type_name)
        elif f.type == FD.TYPE_MESSAGE and type_name not in seen and not type_name.startswith("google.protobuf."):
            seen.add(type_name)
            _used_types(type_name, messages, seen, enums)


def build_markdown(messages: dict[str, Message], enums: dict[str, Enum], events: list[Event]) -> str:
    """The content of docs/events.md."""
    count = sum(len(e.subjects) for e in events)
    envelope = messages[ENVELOPE]
    out = [
        "# Event catalogue",
        "",
        "<!-- Generated by tools/gen_event_catalogue.py from protos/; do not edit: run `make catalogue`. -->",
        "",
        f"Every event the CRM publishes on NATS JetStream: {count} subjects. Each message body is a"
        " `crm.common.v1.EventEnvelope` whose `payload` packs the subject's message (type URL"
        f" `{TYPE_URL_PREFIX}<message>`). `docs/events.schema.json` has the JSON Schema (draft 2020-12) of the"
        " envelope and of every payload in protobuf's canonical JSON mapping: field names in lowerCamelCase,"
        " 64-bit integers as strings, enums by name, bytes in base64, timestamps in RFC 3339, money as a decimal"
        " string with its currency, and no field the message does not declare.",
        "",
        "## Envelope",
        "",
        _md(envelope.comment),
        "",
        "| Field | Type | Meaning |",
        "|---|---|---|",
    ]
    for f in envelope.proto.field:
        out.append(
            f"| `{f.name}` | `{_type_name(f, messages, 'crm.common.v1')}` | {_md(envelope.field_comments[f.name])} |"
        )
    by_domain: dict[str, list[Event]] = {}
    for event in events:
        by_domain.setdefault(event.domain, []).append(event)
    for domain in sorted(by_domain):
        domain_events = sorted(by_domain[domain], key=lambda e: e.subjects[0])
        out += [
            "",
            f"## {domain}",
            "",
            "| Subject | Stream | Payload message | What it means | Fields |",
            "|---|---|---|---|---|",
        ]
        nested: set[str] = set()
        used_enums: set[str] = set()
        for event in domain_events:
            msg = event.message
            subjects = "<br>".join(f"`{s}`" for s in event.subjects)
            streams = sorted(set(event.streams.values()))
            out.append(
                f"| {subjects} | {'<br>'.join(f'`{s}`' for s in streams)} | `{msg.full_name}` | {_md(msg.comment)}"
                f" | {_fields_cell(msg, messages)} |"
            )
            _used_types(msg.full_name, messages, nested, used_enums)
        nested -= {e.message.full_name for e in events}
        if nested:
            out += ["", "Nested messages:", "", "| Message | What it is | Fields |", "|---|---|---|"]
            for name in sorted(nested):
                msg = messages[name]
                out.append(f"| `{name}` | {_md(msg.comment)} | {_fields_cell(msg, messages)} |")
        if used_enums:
            out += ["", "Enums (in JSON by value name):", "", "| Enum | What it is | Values |", "|---|---|---|"]
            for name in sorted(used_enums):
                enum = enums[name]
                values = ", ".join(f"`{v}`" for v in enum.values)
                out.append(f"| `{name}` | {_md(enum.comment)} | {values} |")
    return "\n".join(out) + "\n"


# -- entry point ----------------------------------------------------------------------------------------------------


def render(protos: Path) -> dict[str, str]:
    """The catalogue files' names and contents, generated from the proto tree ``protos``."""
    messages, enums = load(protos)
    for required in (ENVELOPE, MONEY):
        if required not in messages:
            raise CatalogueError(f"message {required} is missing from {protos}")
    events = sorted(find_events(messages, protos), key=lambda e: e.subjects[0])
    schema = build_schema_document(messages, enums, events)
    return {
        MARKDOWN: build_markdown(messages, enums, events),
        SCHEMA: json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    """Generate, or with --check compare against a fresh generation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--protos", type=Path, default=PROTOS, help="proto tree (default: protos/)")
    parser.add_argument("--out", type=Path, default=DOCS, help="output folder (default: docs/)")
    args = parser.parse_args(argv)
    try:
        files = render(args.protos.resolve())
    except CatalogueError as exc:
        print(f"event catalogue: {exc}", file=sys.stderr)
        return 1
    if args.check:
        stale = [
            str(args.out / name)
            for name, text in files.items()
            if not (args.out / name).exists() or (args.out / name).read_text(encoding="utf-8") != text
        ]
        if stale:
            print("event catalogue is stale; run `make catalogue`:", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("event catalogue is current")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(str(args.out / n) for n in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
