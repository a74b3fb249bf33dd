"""Check a request body against its message schema before kafka-python decodes it.

kafka-python's decoders are lenient where Kafka's generated readers are strict: a null
(length -1) in a field the schema does not declare nullable comes out as None and
reaches a handler, which then fails on `None`; a non-flexible array length below -1
silently decodes as an empty list; an array length larger than the frame makes it loop
until it runs out of bytes. Kafka's readers reject all of these ("non-nullable field X
was serialized as null", "Tried to allocate a collection of size N, but there are only
M bytes remaining"), and so does this module, once, for every API and version.

The rules come from the schemas themselves (kafka-python's copies of Kafka's message
JSON, and `schemas/` for the controller APIs): each field's type, the versions it
exists in, `nullableVersions` and tags. `body_plan` turns one (API, version) into a
`StructPlan`, and `check_body` walks the wire bytes with it without building objects.
A negative string or bytes length is null, as in Kafka and kafka-python. A negative array
count other than -1 is refused even where the array is nullable (Kafka would read it as
null): kafka-python would decode it as an empty list, and the broker must not act on a
different request than the one Kafka would see.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

from kafka.protocol.api_message import ApiMessage


class InvalidBodyError(ValueError):
    """The body breaks its schema; the message names the field, e.g. `topics[0].name`.

    The path is assembled while the walk unwinds, so a body that passes builds no strings.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def __str__(self) -> str:
        path = "".join(self.path).lstrip(".")
        return f"{path}: {self.reason}" if path else self.reason

    def within(self, step: str) -> InvalidBodyError:
        """The same error, one level further out (`.name` or `[3]`)."""
        self.path.insert(0, step)
        return self


class Kind(enum.Enum):
    """How a field is laid out on the wire."""

    FIXED = "fixed"  # int8..int64, uint16, float64, bool, uuid
    STRING = "string"  # int16 length (compact: unsigned varint length + 1) + UTF-8
    BYTES = "bytes"  # int32 length (compact: unsigned varint length + 1) + bytes
    ARRAY = "array"  # int32 count (compact: unsigned varint count + 1) + elements
    STRUCT = "struct"  # the fields in order (nullable: an int8 presence byte first)


_FIXED_SIZES = {
    "int8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "int64": 8,
    "float64": 8,
    "bool": 1,
    "uuid": 16,
}
_VARIABLE_KINDS = {"string": Kind.STRING, "bytes": Kind.BYTES, "records": Kind.BYTES}


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One field at one version: what the walker reads and whether null is allowed."""

    name: str
    kind: Kind
    nullable: bool = False
    size: int = 0  # FIXED only
    element: FieldPlan | None = None  # ARRAY only
    struct: StructPlan | None = None  # STRUCT only


@dataclass(frozen=True, slots=True)
class StructPlan:
    """The untagged fields of a struct in wire order, and its known tagged fields."""

    fields: tuple[FieldPlan, ...]
    tagged: dict[int, FieldPlan]


def _field_plan(field: Any, version: int, flexible: bool) -> FieldPlan:
    # `field` is a kafka-python schema field (SimpleField, ArrayField, StructField,
    # StructArrayField); kafka-python ships no types, hence Any.
    name = field.name
    nullable = bool(field.nullable_for_version_q(version))
    if field.is_array():
        element = field.array_of
        if field.is_struct_array():
            inner = FieldPlan(name, Kind.STRUCT, struct=_struct_plan(element, version, flexible))
        else:
            inner = _field_plan(element, version, flexible)
            # The element's JSON is the array's with the inner type: its
            # nullableVersions describe the array, not each element.
            inner = FieldPlan(inner.name, inner.kind, False, inner.size)
        return FieldPlan(name, Kind.ARRAY, nullable, element=inner)
    if field.is_struct():
        return FieldPlan(name, Kind.STRUCT, nullable, struct=_struct_plan(field, version, flexible))
    type_str = field.type_str
    if type_str in _FIXED_SIZES:
        return FieldPlan(name, Kind.FIXED, size=_FIXED_SIZES[type_str])
    if type_str in _VARIABLE_KINDS:
        return FieldPlan(name, _VARIABLE_KINDS[type_str], nullable)
    raise ValueError(f"no wire layout for field {name} of type {type_str}")


def _merge_fixed(fields: list[FieldPlan]) -> tuple[FieldPlan, ...]:
    # Adjacent fixed-size fields are one skip of their summed size: the walk over a Fetch
    # partition is then three steps, not eight.
    merged: list[FieldPlan] = []
    for f in fields:
        last = merged[-1] if merged else None
        if f.kind is Kind.FIXED and last is not None and last.kind is Kind.FIXED:
            first_name = last.name.split("..")[0]
            merged[-1] = FieldPlan(f"{first_name}..{f.name}", Kind.FIXED, size=last.size + f.size)
        else:
            merged.append(f)
    return tuple(merged)


def _struct_plan(struct_field: Any, version: int, flexible: bool) -> StructPlan:
    fields = _merge_fixed(
        [_field_plan(f, version, flexible) for f in struct_field.untagged_fields(version)]
    )
    tagged: dict[int, FieldPlan] = {}
    if flexible:
        for f in struct_field.fields.values():
            if f.for_version_q(version) and f.tagged_field_q(version):
                tagged[int(f.tag)] = _field_plan(f, version, flexible)
    return StructPlan(fields, tagged)


_PLANS: dict[tuple[type[ApiMessage], int], StructPlan] = {}


def body_plan(message: type[ApiMessage], version: int) -> StructPlan:
    """The plan for the body of `message` (a request or response class) at `version`."""
    key = (message, version)
    plan = _PLANS.get(key)
    if plan is None:
        flexible = bool(message.flexible_version_q(version))
        plan = _PLANS[key] = _struct_plan(message._struct, version, flexible)
    return plan


_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


class _Reader:
    """A position in the body; every read checks that the bytes are there."""

    __slots__ = ("data", "end", "flexible", "pos")

    def __init__(self, data: memoryview, pos: int, end: int, flexible: bool) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.flexible = flexible

    def skip(self, size: int) -> None:
        if size > self.end - self.pos:
            raise InvalidBodyError(f"needs {size} bytes, only {self.end - self.pos} remain")
        self.pos += size

    def uvarint(self) -> int:
        # Kafka refuses varints longer than 5 bytes ("Varint is too long").
        value = 0
        data, pos, end = self.data, self.pos, self.end
        for shift in range(0, 35, 7):
            if pos >= end:
                raise InvalidBodyError("a varint runs past the end of the body")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos
                return value
        raise InvalidBodyError("unsigned varint longer than 5 bytes")

    def length(self, wide: bool) -> int:
        """A length or count prefix; -1 means null."""
        if self.flexible:
            return self.uvarint() - 1
        codec = _INT32 if wide else _INT16
        if codec.size > self.end - self.pos:
            raise InvalidBodyError("a length prefix runs past the end of the body")
        (value,) = codec.unpack_from(self.data, self.pos)
        self.pos += codec.size
        return int(value)


def _null_or_length(reader: _Reader, field: FieldPlan) -> int | None:
    length = reader.length(field.kind is not Kind.STRING)
    if length >= 0:
        return length
    if length < -1 and field.kind is Kind.ARRAY:
        # kafka-python would decode this as [] where Kafka reads null.
        raise InvalidBodyError(f"negative count {length}")
    if not field.nullable:
        raise InvalidBodyError("non-nullable field was serialized as null")
    return None


def _walk_field(reader: _Reader, field: FieldPlan) -> None:
    kind = field.kind
    if kind is Kind.FIXED:
        reader.skip(field.size)
    elif kind is Kind.STRING or kind is Kind.BYTES:
        length = _null_or_length(reader, field)
        if length is not None:
            reader.skip(length)
    elif kind is Kind.ARRAY:
        count = _null_or_length(reader, field)
        if count is None:
            return
        # Every element takes at least one byte: a larger count is a lie, and believing
        # it would have the decoder loop that many times.
        if count > reader.end - reader.pos:
            raise InvalidBodyError(
                f"{count} elements, but only {reader.end - reader.pos} bytes remain"
            )
        element = field.element
        assert element is not None
        if element.kind is Kind.FIXED:
            reader.skip(count * element.size)
            return
        for i in range(count):
            try:
                _walk_field(reader, element)
            except InvalidBodyError as exc:
                raise exc.within(f"[{i}]") from None
    else:
        plan = field.struct
        assert plan is not None
        if field.nullable:
            reader.skip(1)
            if reader.data[reader.pos - 1] == 0xFF:
                return
        _walk_struct(reader, plan)


def _walk_struct(reader: _Reader, plan: StructPlan) -> None:
    field = None
    try:
        for field in plan.fields:
            _walk_field(reader, field)
        field = None
        if reader.flexible:
            _walk_tags(reader, plan)
    except InvalidBodyError as exc:
        raise exc.within(f".{field.name}" if field is not None else "._tagged_fields") from None


def _walk_tags(reader: _Reader, plan: StructPlan) -> None:
    count = reader.uvarint()
    if count > reader.end - reader.pos:
        raise InvalidBodyError(
            f"{count} tagged fields, only {reader.end - reader.pos} bytes remain"
        )
    previous = -1
    for _ in range(count):
        tag = reader.uvarint()
        if tag <= previous:
            raise InvalidBodyError(f"tag {tag} after tag {previous} (out of order)")
        previous = tag
        size = reader.uvarint()
        start = reader.pos
        reader.skip(size)
        known = plan.tagged.get(tag)
        if known is not None:
            # A known tag is read by its schema, within the size it announced.
            try:
                _walk_field(_Reader(reader.data, start, reader.pos, flexible=True), known)
            except InvalidBodyError as exc:
                raise exc.within(f"[{known.name}]") from None


def check_body(
    message: type[ApiMessage], version: int, data: bytes | memoryview, pos: int = 0
) -> int:
    """Walk the body of a `message` at `version` starting at `pos`; return where it ends.

    Raises InvalidBodyError naming the first field that breaks the schema: a null in a
    non-nullable field, a negative length or count, a count or length beyond the bytes
    left, a varint longer than 5 bytes, tagged fields out of order. Bytes after the end
    are not this function's business (the caller decides whether trailing bytes matter).
    """
    view = memoryview(data)
    reader = _Reader(view, pos, len(view), bool(message.flexible_version_q(version)))
    _walk_struct(reader, body_plan(message, version))
    return reader.pos
