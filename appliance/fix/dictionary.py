"""FIX data dictionaries (the reference engine's XML format) and message validation.

``DataDictionary.load(path)`` reads FIX42.xml / FIX44.xml (fields with types and enums, header,
trailer, messages, components, repeating groups). ``validate(msg)`` checks a parsed message the
way the reference engine does, in the same order, and returns ``None`` or a ``ValidationError``
carrying the session reject reason (373) and the offending tag (371):

1. structure: no header field after the body started, no body field after the trailer (14);
2. MsgType known (11);
3. required fields of header, trailer, message and of every group instance present (1);
4. header, trailer, body fields in wire order: repeated tag (13), empty value (4), format by
   type (6), enum value (5), tag defined at all (0), tag defined for this message type (2),
   NumInGroup equal to the number of group instances (16).

Reason codes are the FIX SessionRejectReason values below (REJ_*); texts are ``REJECT_TEXT``.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from appliance.fix.wire import Message, parse_utc_timestamp

# SessionRejectReason (373)
REJ_INVALID_TAG = 0
REJ_REQUIRED_MISSING = 1
REJ_TAG_NOT_IN_MSG = 2
REJ_UNDEFINED_TAG = 3
REJ_NO_VALUE = 4
REJ_BAD_VALUE = 5
REJ_BAD_FORMAT = 6
REJ_DECRYPTION = 7
REJ_SIGNATURE = 8
REJ_COMPID = 9
REJ_SENDING_TIME = 10
REJ_INVALID_MSGTYPE = 11
REJ_REPEATED_TAG = 13
REJ_OUT_OF_ORDER = 14
REJ_GROUP_ORDER = 15
REJ_GROUP_COUNT = 16
REJ_OTHER = 99

REJECT_TEXT = {
    REJ_INVALID_TAG: "Invalid tag number",
    REJ_REQUIRED_MISSING: "Required tag missing",
    REJ_TAG_NOT_IN_MSG: "Tag not defined for this message type",
    REJ_UNDEFINED_TAG: "Undefined Tag",
    REJ_NO_VALUE: "Tag specified without a value",
    REJ_BAD_VALUE: "Value is incorrect (out of range) for this tag",
    REJ_BAD_FORMAT: "Incorrect data format for value",
    REJ_DECRYPTION: "Decryption problem",
    REJ_SIGNATURE: "Signature problem",
    REJ_COMPID: "CompID problem",
    REJ_SENDING_TIME: "SendingTime accuracy problem",
    REJ_INVALID_MSGTYPE: "Invalid MsgType",
    REJ_REPEATED_TAG: "Tag appears more than once",
    REJ_OUT_OF_ORDER: "Tag specified out of required order",
    REJ_GROUP_ORDER: "Repeating group fields out of order",
    REJ_GROUP_COUNT: "Incorrect NumInGroup count for repeating group",
    REJ_OTHER: "Other",
}

TRAILER_TAGS = frozenset((93, 89, 10))

_INT = re.compile(rb"^-?\d+$")
_FLOAT = re.compile(rb"^-?(\d+\.?\d*|\.\d+)$")
_DATE = re.compile(rb"^\d{8}$")
_TIME = re.compile(rb"^\d{2}:\d{2}:\d{2}(\.\d{1,9})?$")
_MONTHYEAR = re.compile(rb"^\d{6}(\d{2}|w\d)?$")

_INT_TYPES = {"INT", "LENGTH", "SEQNUM", "NUMINGROUP", "TAGNUM", "DAYOFMONTH"}
_FLOAT_TYPES = {"FLOAT", "QTY", "PRICE", "PRICEOFFSET", "AMT", "PERCENTAGE"}
_MULTI_TYPES = {"MULTIPLEVALUESTRING", "MULTIPLECHARVALUE", "MULTIPLESTRINGVALUE"}


def valid_format(ftype: str, value: bytes) -> bool:
    if ftype in _INT_TYPES:
        return bool(_INT.match(value))
    if ftype in _FLOAT_TYPES:
        return bool(_FLOAT.match(value))
    if ftype == "CHAR":
        return len(value) == 1
    if ftype == "BOOLEAN":
        return value in (b"Y", b"N")
    if ftype == "UTCTIMESTAMP":
        return parse_utc_timestamp(value) is not None
    if ftype == "UTCTIMEONLY":
        return bool(_TIME.match(value))
    if ftype in ("UTCDATE", "UTCDATEONLY", "LOCALMKTDATE"):
        return bool(_DATE.match(value))
    if ftype == "MONTHYEAR":
        return bool(_MONTHYEAR.match(value))
    return True


@dataclass
class FieldDef:
    tag: int
    name: str
    ftype: str
    enums: frozenset | None


@dataclass
class GroupDef:
    count_tag: int
    delim: int                         # first field of each instance
    fields: set = field(default_factory=set)       # member tags (top level of the group)
    required: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)     # nested count tag -> GroupDef
    order: list = field(default_factory=list)


@dataclass
class MessageDef:
    msg_type: bytes
    name: str
    category: str
    fields: set = field(default_factory=set)
    required: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)


@dataclass
class ValidationError:
    reason: int          # REJ_*
    tag: int             # offending tag, 0 when none applies

    @property
    def text(self) -> str:
        return REJECT_TEXT.get(self.reason, "Other")


class DataDictionary:
    """One FIX version's dictionary."""

    def __init__(self):
        self.begin_string = b""
        self.fields: dict[int, FieldDef] = {}
        self.names: dict[str, int] = {}
        self.header = MessageDef(b"", "header", "header")
        self.trailer = MessageDef(b"", "trailer", "trailer")
        self.messages: dict[bytes, MessageDef] = {}

    @classmethod
    def load(cls, path) -> "DataDictionary":
        root = ET.parse(str(path)).getroot()
        dd = cls()
        dd.begin_string = f"{root.get('type', 'FIX')}.{root.get('major')}.{root.get('minor')}".encode()
        for f in root.find("fields"):
            vals = [v.get("enum") for v in f.findall("value")]
            fd = FieldDef(int(f.get("number")), f.get("name"), f.get("type"),
                          frozenset(v.encode() for v in vals) if vals else None)
            dd.fields[fd.tag] = fd
            dd.names[fd.name] = fd.tag
        components = {c.get("name"): c for c in (root.find("components") or [])}
        dd._fill(dd.header, root.find("header"), components, True)
        dd._fill(dd.trailer, root.find("trailer"), components, True)
        for m in root.find("messages"):
            md = MessageDef(m.get("msgtype").encode(), m.get("name"), m.get("msgcat"))
            dd._fill(md, m, components, True)
            dd.messages[md.msg_type] = md
        return dd

    def _tag(self, name: str) -> int:
        try:
            return self.names[name]
        except KeyError:
            raise ValueError(f"dictionary {self.begin_string!r}: unknown field name {name!r}") from None

    def _fill(self, target, node, components, required_ctx: bool) -> None:
        """Add the fields, groups and (expanded) components under ``node`` to ``target``."""
        if node is None:
            return
        for child in node:
            req = child.get("required") == "Y" and required_ctx
            if child.tag == "field":
                tag = self._tag(child.get("name"))
                target.fields.add(tag)
                if isinstance(target, GroupDef):
                    target.order.append(tag)
                if req:
                    target.required.append(tag)
            elif child.tag == "group":
                tag = self._tag(child.get("name"))
                target.fields.add(tag)
                if isinstance(target, GroupDef):
                    target.order.append(tag)
                if req:
                    target.required.append(tag)
                g = GroupDef(tag, 0)
                self._fill(g, child, components, True)
                g.delim = g.order[0] if g.order else 0
                target.groups[tag] = g
            elif child.tag == "component":
                comp = components.get(child.get("name"))
                if comp is None:
                    raise ValueError(f"dictionary {self.begin_string!r}: unknown component {child.get('name')!r}")
                self._fill(target, comp, components, req)

    # ---- queries ------------------------------------------------------------------------

    def is_header_tag(self, tag: int) -> bool:
        return tag in self.header.fields

    def is_trailer_tag(self, tag: int) -> bool:
        return tag in TRAILER_TAGS

    def is_app_message(self, msg_type: bytes) -> bool:
        md = self.messages.get(msg_type)
        return md is not None and md.category == "app"

    # ---- structure: split body into top-level fields and group instances -----------------

    def _walk_group(self, fields, i, g: GroupDef, out_counts: dict, errors: list):
        """Consume group instances of ``g`` starting at ``fields[i]``; return (next index, instances)."""
        instances = []
        n = len(fields)
        while i < n and fields[i][0] == g.delim:
            inst = [fields[i]]
            seen = {fields[i][0]}
            i += 1
            while i < n:
                t = fields[i][0]
                if t not in g.fields or t == g.delim or t in seen:
                    break
                seen.add(t)
                count_field = fields[i]
                inst.append(count_field)
                i += 1
                if t in g.groups:
                    i, sub = self._walk_group(fields, i, g.groups[t], out_counts, errors)
                    out_counts.setdefault(t, []).append((count_field, len(sub)))
                    inst.extend(f for s in sub for f in s)
                    for s in sub:
                        for r in g.groups[t].required:
                            if not any(ft == r for ft, _ in s):
                                errors.append(ValidationError(REJ_REQUIRED_MISSING, r))
            instances.append(inst)
        return i, instances

    def body_blocks(self, msg_type: bytes, body: list):
        """Split body fields into blocks: ``[(tag, value)]`` for plain fields, group count fields
        followed by their instances' fields. Returns (blocks, group_counts, errors)."""
        md = self.messages.get(msg_type)
        groups = md.groups if md else {}
        blocks = []
        counts = {}
        errors = []
        i = 0
        n = len(body)
        while i < n:
            t, v = body[i]
            i += 1
            block = [(t, v)]
            if t in groups:
                i, inst = self._walk_group(body, i, groups[t], counts, errors)
                counts.setdefault(t, []).append(((t, v), len(inst)))
                for s in inst:
                    block.extend(s)
                    for r in groups[t].required:
                        if not any(ft == r for ft, _ in s):
                            errors.append(ValidationError(REJ_REQUIRED_MISSING, r))
            blocks.append(block)
        return blocks, counts, errors

    def order_body(self, msg_type: bytes, body: list) -> list:
        """Body fields as the reference engine writes them: top-level by tag, groups kept whole."""
        blocks, _, _ = self.body_blocks(msg_type, body)
        blocks.sort(key=lambda b: b[0][0])
        return [f for b in blocks for f in b]

    # ---- validation ---------------------------------------------------------------------

    def validate(self, msg: Message):
        """Return None when ``msg`` is valid, else the first ValidationError (see module doc)."""
        fields = msg.fields
        htags = self.header.fields
        # 1. structure: header, then body, then trailer
        section = 0
        for tag, _ in fields:
            if tag in htags:
                if section != 0:
                    return ValidationError(REJ_OUT_OF_ORDER, tag)
            elif tag in TRAILER_TAGS:
                section = 2
            else:
                if section == 2:
                    return ValidationError(REJ_OUT_OF_ORDER, tag)
                section = 1
        # 2. message type
        mt = msg.msg_type
        md = self.messages.get(mt)
        if md is None:
            return ValidationError(REJ_INVALID_MSGTYPE, 0)
        header, trailer, body = [], [], []
        for f in fields:
            (header if f[0] in htags else trailer if f[0] in TRAILER_TAGS else body).append(f)
        # 3. required fields
        present_h = {t for t, _ in header}
        for r in self.header.required:
            if r not in present_h:
                return ValidationError(REJ_REQUIRED_MISSING, r)
        present_t = {t for t, _ in trailer}
        for r in self.trailer.required:
            if r not in present_t:
                return ValidationError(REJ_REQUIRED_MISSING, r)
        blocks, counts, group_errors = self.body_blocks(mt, body)
        top = {b[0][0] for b in blocks}
        for r in md.required:
            if r not in top:
                return ValidationError(REJ_REQUIRED_MISSING, r)
        if group_errors:
            return group_errors[0]
        # 4. field by field
        for part, in_body in ((header, False), (trailer, False), (body, True)):
            last = None
            for tag, value in part:
                if tag == last and not in_body:   # body repeats: checked per block below
                    return ValidationError(REJ_REPEATED_TAG, tag)
                last = tag
                if not value:
                    return ValidationError(REJ_NO_VALUE, tag)
                fd = self.fields.get(tag)
                if fd is not None:
                    if not valid_format(fd.ftype, value):
                        return ValidationError(REJ_BAD_FORMAT, tag)
                    if fd.enums is not None:
                        vals = value.split(b" ") if fd.ftype in _MULTI_TYPES else (value,)
                        if any(v not in fd.enums for v in vals):
                            return ValidationError(REJ_BAD_VALUE, tag)
                else:
                    return ValidationError(REJ_INVALID_TAG, tag)
                if in_body and not self._in_message(md, tag):
                    return ValidationError(REJ_TAG_NOT_IN_MSG, tag)
        for tag, lst in counts.items():
            for (ctag, cval), n in lst:
                try:
                    declared = int(cval)
                except ValueError:
                    return ValidationError(REJ_BAD_FORMAT, ctag)
                if declared != n:
                    return ValidationError(REJ_GROUP_COUNT, ctag)
        # repeated top-level body tags (outside groups)
        seen = set()
        for b in blocks:
            t = b[0][0]
            if t in seen:
                return ValidationError(REJ_REPEATED_TAG, t)
            seen.add(t)
        return None

    @staticmethod
    def _in_message(md: MessageDef, tag: int) -> bool:
        if tag in md.fields:
            return True
        stack = list(md.groups.values())
        while stack:
            g = stack.pop()
            if tag in g.fields:
                return True
            stack.extend(g.groups.values())
        return False


_CACHE: dict = {}


def data_dir() -> Path:
    """Directory holding the packaged FIX 4.2 / 4.4 dictionaries (QuickFIX's, with its licence)."""
    from appliance import data
    return data.fix_dir()


def load_cached(path) -> DataDictionary:
    key = str(Path(path).resolve())
    dd = _CACHE.get(key)
    if dd is None:
        dd = _CACHE[key] = DataDictionary.load(path)
    return dd


def for_version(begin_string: bytes | str, directory=None) -> DataDictionary:
    """The dictionary for ``FIX.4.2`` / ``FIX.4.4`` from ``directory`` (default: data_dir())."""
    bs = begin_string.decode() if isinstance(begin_string, bytes) else begin_string
    name = {"FIX.4.2": "FIX42.xml", "FIX.4.4": "FIX44.xml"}.get(bs)
    if name is None:
        raise ValueError(f"no data dictionary for BeginString {bs!r} (have FIX.4.2, FIX.4.4)")
    path = Path(directory or data_dir()) / name
    if not path.exists():
        raise FileNotFoundError(f"data dictionary {path} not found")
    return load_cached(path)
