"""Requests for every API and version the broker decodes, built from the message schemas,
and the same requests with one field corrupted.

The schema model here is read straight from the Kafka message JSON that kafka-python ships
(and `reference_broker/protocol/schemas/` for the controller APIs), independently of the
broker's own validation, and the encoder writes the wire bytes itself so that a test can
put anything anywhere: a null where the schema forbids it, a negative or oversized
length, bytes of the wrong type, a cut-off body, a version out of range.

- `message_schema(cls, version)`: the fields of a request at a version.
- `request_values(...)`: a Hypothesis strategy for a valid value tree of those fields.
- `encode_body(...)`: the wire bytes of a value tree, with at most one `Corruption`.
- `corruptible_sites(...)`: where a corruption can go, and which kinds fit there.
- `corrupted_requests()`: a strategy for whole corrupted request frames.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage

from reference_broker.protocol import ALL_APIS, ApiSpec
from tests.wire import record_batch

TOPIC = "fuzzed"
"""The topic the fuzz broker has; generated requests name it most of the time."""
STRINGS = [TOPIC, "fuzz-new-topic", "fuzz-group", ""]
INTS = [-1, 0, 1, 2]
RECORDS = record_batch([b"fuzz-value"])


def _versions(text: str | None) -> tuple[int, int] | None:
    if text is None or text.strip() in ("", "none"):
        return None
    text = text.strip()
    if text.endswith("+"):
        return int(text[:-1]), 32767
    if "-" in text:
        low, high = text.split("-")
        return int(low), int(high)
    return int(text), int(text)


def _in(versions: tuple[int, int] | None, version: int) -> bool:
    return versions is not None and versions[0] <= version <= versions[1]


SCALARS = {
    "int8": ">b",
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "int64": ">q",
    "float64": ">d",
    "bool": ">?",
    "uuid": "16s",
}


@dataclass(frozen=True)
class SchemaField:
    """One field of a message at one version, as the Kafka JSON declares it."""

    name: str
    type: str  # "int32", "string", "bytes", "records", "[]int32", "[]Struct", "Struct"
    nullable: bool
    tag: int | None
    fields: tuple[SchemaField, ...] = ()  # struct fields (for "[]Struct" and "Struct")

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:]

    @property
    def is_struct(self) -> bool:
        return bool(self.fields) and not self.is_array


def _fields(
    json_fields: list[dict[str, Any]], version: int, flexible: bool
) -> tuple[SchemaField, ...]:
    out = []
    for spec in json_fields:
        if not _in(_versions(spec.get("versions")), version):
            continue
        tagged = flexible and _in(_versions(spec.get("taggedVersions")), version)
        out.append(
            SchemaField(
                name=spec["name"],
                type=spec["type"],
                nullable=_in(_versions(spec.get("nullableVersions")), version),
                tag=int(spec["tag"]) if tagged else None,
                fields=_fields(spec.get("fields", []), version, flexible),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class MessageSchema:
    """The body layout of one request class at one version."""

    api_key: int
    version: int
    flexible: bool
    fields: tuple[SchemaField, ...]


def message_schema(cls: type[ApiMessage], version: int) -> MessageSchema:
    """The fields of `cls` at `version`, from its JSON (common structs already inlined)."""
    doc = cls.json
    flexible = _in(_versions(doc.get("flexibleVersions")), version)
    return MessageSchema(
        doc["apiKey"], version, flexible, _fields(doc["fields"], version, flexible)
    )


# -- valid values -------------------------------------------------------------------------


def _scalar_values(type_name: str) -> st.SearchStrategy[Any]:
    if type_name == "bool":
        return st.booleans()
    if type_name == "uuid":
        return st.sampled_from([bytes(16), bytes(range(1, 17))])
    if type_name == "float64":
        return st.just(0.0)
    if type_name == "uint16":
        return st.sampled_from([0, 1, 2])
    return st.sampled_from(INTS)


def _field_values(f: SchemaField, depth: int) -> st.SearchStrategy[Any]:
    if f.is_array:
        if f.fields:
            element: st.SearchStrategy[Any] = _struct_values(f.fields, depth + 1)
        else:
            element = _leaf_values(f.element_type, nullable=False)
        values: st.SearchStrategy[Any] = st.lists(element, max_size=2 if depth < 3 else 1)
    elif f.is_struct:
        values = _struct_values(f.fields, depth + 1)
    else:
        return _leaf_values(f.type, f.nullable)
    return st.one_of(st.none(), values) if f.nullable else values


def _leaf_values(type_name: str, nullable: bool) -> st.SearchStrategy[Any]:
    if type_name == "string":
        values: st.SearchStrategy[Any] = st.sampled_from(STRINGS)
    elif type_name == "records":
        values = st.just(RECORDS)
    elif type_name == "bytes":
        values = st.sampled_from([b"", b"\x00\x01", b"meta"])
    else:
        return _scalar_values(type_name)
    return st.one_of(values, st.none()) if nullable else values


def _struct_values(fields: tuple[SchemaField, ...], depth: int) -> st.SearchStrategy[Any]:
    # Tagged fields are left out half the time, as clients leave out defaults.
    required = {f.name: _field_values(f, depth) for f in fields if f.tag is None}
    optional = {f.name: _field_values(f, depth) for f in fields if f.tag is not None}
    return st.fixed_dictionaries(required, optional=optional)


def request_values(schema: MessageSchema) -> st.SearchStrategy[dict[str, Any]]:
    """A valid value tree for the body of `schema`: dicts for structs, lists for arrays."""
    return _struct_values(schema.fields, 0)


def default_values(fields: tuple[SchemaField, ...]) -> dict[str, Any]:
    """A fixed value tree with every array one element long and nothing null, so that every
    field, nested or not, appears once on the wire."""
    out: dict[str, Any] = {}
    for f in fields:
        if f.is_array:
            out[f.name] = [default_values(f.fields) if f.fields else _default_leaf(f.element_type)]
        elif f.is_struct:
            out[f.name] = default_values(f.fields)
        else:
            out[f.name] = _default_leaf(f.type)
    return out


def _default_leaf(type_name: str) -> Any:
    return {
        "string": TOPIC,
        "records": RECORDS,
        "bytes": b"meta",
        "bool": False,
        "uuid": bytes(16),
        "float64": 0.0,
    }.get(type_name, 0)


# -- corruptions --------------------------------------------------------------------------


class CorruptionKind(enum.Enum):
    """What is done to one field."""

    NULL = "null"  # the null marker in a field whose schema is not nullable at this version
    NEGATIVE = "negative"  # a negative length or count other than null's -1
    OVERSIZED = "oversized"  # a length or count far beyond the bytes that follow
    BAD_UTF8 = "bad-utf8"  # string bytes that are not UTF-8
    WRONG_TYPE = "wrong-type"  # the field written as another wire type (shifts what follows)


STRICT_KINDS = frozenset(
    {
        CorruptionKind.NULL,
        CorruptionKind.NEGATIVE,
        CorruptionKind.OVERSIZED,
        CorruptionKind.BAD_UTF8,
    }
)
"""Kinds no reading of the bytes can accept. A wrong-type field shifts the rest of the body,
which may by chance still read as some other well-formed request."""


@dataclass(frozen=True)
class Corruption:
    """One corruption: at the `site`-th field written (pre-order), of `kind`."""

    site: int
    kind: CorruptionKind


@dataclass(frozen=True)
class Site:
    """A field occurrence on the wire and the corruptions that fit it."""

    index: int
    path: str
    kinds: tuple[CorruptionKind, ...]


def _kinds_for(f: SchemaField, value: Any) -> tuple[CorruptionKind, ...]:
    kinds = [CorruptionKind.WRONG_TYPE]
    variable = f.is_array or f.type in ("string", "bytes", "records")
    if variable:
        kinds.append(CorruptionKind.OVERSIZED)
        if not f.nullable:
            kinds.append(CorruptionKind.NULL)
        # A negative string or bytes length is null to Kafka; only a non-null field
        # can be corrupted that way. An array refuses any negative count but -1.
        if f.is_array or not f.nullable:
            kinds.append(CorruptionKind.NEGATIVE)
        if f.type == "string" and value:
            kinds.append(CorruptionKind.BAD_UTF8)
    return tuple(kinds)


@dataclass
class _Writer:
    flexible: bool
    corruption: Corruption | None = None
    out: bytearray = field(default_factory=bytearray)
    sites: list[Site] = field(default_factory=list)

    def uvarint(self, value: int) -> None:
        while value >= 0x80:
            self.out.append((value & 0x7F) | 0x80)
            value >>= 7
        self.out.append(value)

    def length(self, value: int | None, wide: bool) -> None:
        """A length or count prefix; None is null."""
        if self.flexible:
            self.uvarint(0 if value is None else value + 1)
        else:
            self.out += struct.pack(">i" if wide else ">h", -1 if value is None else value)

    def raw_length(self, value: int, wide: bool) -> None:
        """A prefix holding exactly `value` (which may be what no valid body holds)."""
        if self.flexible:
            self.uvarint(value & 0xFFFFFFFF)  # Kafka reads the varint as a signed int
        else:
            self.out += struct.pack(">i" if wide else ">h", value)


def _write_field(w: _Writer, f: SchemaField, value: Any, path: str) -> None:
    index = len(w.sites)
    w.sites.append(Site(index, path, _kinds_for(f, value)))
    wide = f.is_array or f.type in ("bytes", "records")
    if w.corruption is not None and w.corruption.site == index:
        kind = w.corruption.kind
        if kind is CorruptionKind.NULL:
            w.length(None, wide)
        elif kind is CorruptionKind.NEGATIVE:
            w.raw_length(-(2**31) if wide else -2, wide)
        elif kind is CorruptionKind.OVERSIZED:
            w.raw_length(2**31 - 2 if wide else 32766, wide)
        elif kind is CorruptionKind.BAD_UTF8:
            w.length(2, wide)
            w.out += b"\xc3\x28"
        else:  # WRONG_TYPE: a scalar where a length is, a string where a scalar is
            if wide or f.type == "string":
                w.out += b"\x01"
            else:
                w.length(3, False)
                w.out += b"abc"
        return
    if f.is_array:
        if value is None:
            w.length(None, True)
            return
        w.length(len(value), True)
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if f.fields:
                _write_struct(w, f.fields, item, item_path)
            else:
                element = SchemaField(f.name, f.element_type, False, None)
                _write_field(w, element, item, item_path)
    elif f.is_struct:
        if f.nullable:
            w.out.append(0xFF if value is None else 1)
            if value is None:
                return
        _write_struct(w, f.fields, value, path)
    elif f.type == "string":
        data = None if value is None else value.encode()
        w.length(None if data is None else len(data), False)
        w.out += data or b""
    elif f.type in ("bytes", "records"):
        w.length(None if value is None else len(value), True)
        w.out += value or b""
    else:
        w.out += struct.pack(SCALARS[f.type], value)


def _write_struct(
    w: _Writer, fields: tuple[SchemaField, ...], value: dict[str, Any], path: str
) -> None:
    prefix = f"{path}." if path else ""
    for f in fields:
        if f.tag is None:
            _write_field(w, f, value[f.name], prefix + f.name)
    if not w.flexible:
        return
    tagged = sorted(
        (f for f in fields if f.tag is not None and f.name in value), key=lambda f: f.tag or 0
    )
    w.uvarint(len(tagged))
    for f in tagged:
        inner = _Writer(True, w.corruption, bytearray(), w.sites)
        _write_field(inner, f, value[f.name], prefix + f.name)
        assert f.tag is not None
        w.uvarint(f.tag)
        w.uvarint(len(inner.out))
        w.out += inner.out


def encode_body(
    schema: MessageSchema, values: dict[str, Any], corruption: Corruption | None = None
) -> tuple[bytes, list[Site]]:
    """The body bytes of `values`, with `corruption` applied, and the sites written."""
    w = _Writer(schema.flexible, corruption)
    _write_struct(w, schema.fields, values, "")
    return bytes(w.out), w.sites


def request_header(api_key: int, version: int, correlation_id: int, flexible: bool) -> bytes:
    """Request header v1, or v2 (an empty tagged-field section) for a flexible version."""
    client_id = b"faultline-fuzz"
    head = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return head + (b"\x00" if flexible else b"")


def framed(data: bytes) -> bytes:
    """Prefix with the 4-byte size."""
    return struct.pack(">i", len(data)) + data


# -- whole corrupted requests -------------------------------------------------------------


@dataclass(frozen=True)
class CorruptedRequest:
    """A request frame with one defect, and what a test needs to judge the answer."""

    spec: ApiSpec
    version: int  # the version in the header
    description: str
    frame: bytes
    correlation_id: int
    strict: bool  # whether no reading of the frame is a well-formed request


SPECS = sorted(ALL_APIS.values(), key=lambda s: s.key)
SUPPORTED = [(spec, v) for spec in SPECS for v in range(spec.min_version, spec.max_version + 1)]
BAD_VERSIONS = [-1, -2, -32768, 32767]


@st.composite
def corrupted_requests(draw: st.DrawFn) -> CorruptedRequest:
    """A request for any API and version the broker decodes, with one defect: a field
    corrupted, the body cut short, or the header's version out of range."""
    spec = draw(st.sampled_from(SPECS))
    version = draw(st.integers(spec.min_version, spec.max_version))
    schema = message_schema(spec.request, version)
    values = draw(request_values(schema))
    body, sites = encode_body(schema, values)
    correlation_id = draw(st.integers(0, 2**31 - 1))
    how = draw(st.sampled_from(["field", "field", "field", "truncate", "version"]))
    if how == "version" or not body:
        bad = draw(
            st.sampled_from(
                [*BAD_VERSIONS, spec.min_version - 1, spec.max_version + 1, spec.max_version + 100]
            )
        )
        head = request_header(spec.key, bad, correlation_id, False)
        return CorruptedRequest(
            spec, bad, f"version {bad}", framed(head + body), correlation_id, True
        )
    head = request_header(spec.key, version, correlation_id, spec.flexible(version))
    # Wrong-type fields are drawn apart from the strict kinds: most sites are scalars,
    # where it is the only kind that fits, and would crowd the rest out. Never for
    # CreateTopics: a shifted body that happens to read well could ask for any partition
    # count, and CreateTopics' limits are not what this corruption is about.
    wrong_type = spec.key != ApiKey.CreateTopics and draw(st.booleans())
    choices = [
        (site, kind)
        for site in sites
        for kind in site.kinds
        if (kind is CorruptionKind.WRONG_TYPE) == wrong_type
    ]
    if how == "truncate" or not choices:
        cut = draw(st.integers(0, len(body) - 1))
        desc = f"body cut to {cut} of {len(body)} bytes"
        return CorruptedRequest(
            spec, version, desc, framed(head + body[:cut]), correlation_id, True
        )
    site, kind = draw(st.sampled_from(choices))
    corrupt, _ = encode_body(schema, values, Corruption(site.index, kind))
    desc = f"{kind.value} at {site.path}"
    return CorruptedRequest(
        spec, version, desc, framed(head + corrupt), correlation_id, kind in STRICT_KINDS
    )
