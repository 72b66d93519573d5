"""Data dictionary loading and validation against the reference XML dictionaries."""
from __future__ import annotations

import pytest

from appliance.fix import dictionary as D
from appliance.fix import wire

DD44 = D.for_version("FIX.4.4")
DD42 = D.for_version("FIX.4.2")
HDR = [(34, b"2"), (49, b"TW44"), (52, b"20240101-00:00:00"), (56, b"ISLD")]
NOS = [(11, b"ID"), (21, b"1"), (40, b"1"), (54, b"1"), (55, b"INTC"), (60, b"20240101-00:00:00")]


def msg(mt, body, header=HDR, dd=DD44):
    return wire.parse(wire.encode(dd.begin_string, mt, header, body))


def check(m, dd=DD44):
    e = dd.validate(m)
    return None if e is None else (e.reason, e.tag)


def test_both_dictionaries_load_with_messages_fields_and_groups():
    assert DD44.begin_string == b"FIX.4.4" and DD42.begin_string == b"FIX.4.2"
    assert DD44.messages[b"D"].name == "NewOrderSingle" and 11 in DD44.messages[b"D"].required
    assert 386 in DD44.messages[b"D"].groups and DD44.messages[b"D"].groups[386].delim == 336
    assert DD44.fields[40].enums and b"1" in DD44.fields[40].enums


def test_valid_new_order_single_passes():
    assert check(msg(b"D", NOS)) is None
    assert check(msg(b"D", NOS + [(38, b"-12.5")])) is None


@pytest.mark.parametrize("body,expected", [
    (NOS[1:], (D.REJ_REQUIRED_MISSING, 11)),
    (NOS + [(38, b"+1")], (D.REJ_BAD_FORMAT, 38)),
    (NOS + [(38, b"1e5")], (D.REJ_BAD_FORMAT, 38)),
    ([(40 if t == 40 else t, b"w" if t == 40 else v) for t, v in NOS], (D.REJ_BAD_VALUE, 40)),
    (NOS + [(9999, b"x")], (D.REJ_INVALID_TAG, 9999)),
    (NOS + [(112, b"x")], (D.REJ_TAG_NOT_IN_MSG, 112)),
    (NOS + [(58, b"")], (D.REJ_NO_VALUE, 58)),
    (NOS + [(386, b"2"), (336, b"A")], (D.REJ_GROUP_COUNT, 386)),
    (NOS + [(58, b"a"), (58, b"b")], (D.REJ_REPEATED_TAG, 58)),
    (NOS + [(126, b"20040415")], (D.REJ_BAD_FORMAT, 126)),
])
def test_invalid_new_order_single_gives_reason_and_tag(body, expected):
    assert check(msg(b"D", body)) == expected


def test_group_with_declared_count_zero_and_nested_instances():
    assert check(msg(b"D", NOS + [(386, b"0")])) is None
    assert check(msg(b"D", NOS + [(386, b"2"), (336, b"A"), (625, b"x"), (336, b"B")])) is None


def test_unknown_msgtype_and_header_after_body():
    assert check(msg(b"*", [])) == (D.REJ_INVALID_MSGTYPE, 0)
    raw = wire.encode(b"FIX.4.4", b"0", [], [(112, b"x"), (34, b"2"), (49, b"TW44"),
                                            (52, b"20240101-00:00:00"), (56, b"ISLD")])
    assert check(wire.parse(raw)) == (D.REJ_OUT_OF_ORDER, 34)


def test_order_body_sorts_top_level_and_keeps_groups_whole():
    body = [(60, b"t"), (11, b"ID"), (386, b"2"), (336, b"B"), (625, b"x"), (336, b"A"), (21, b"1")]
    assert DD44.order_body(b"D", body) == [(11, b"ID"), (21, b"1"), (60, b"t"), (386, b"2"),
                                           (336, b"B"), (625, b"x"), (336, b"A")]


def test_fix42_dictionary_validates_its_own_messages():
    hdr42 = [(34, b"2"), (49, b"TW42"), (52, b"20240101-00:00:00"), (56, b"ISLD")]
    body = [(11, b"ID"), (21, b"1"), (40, b"1"), (54, b"1"), (55, b"IBM"), (60, b"20240101-00:00:00")]
    assert check(msg(b"D", body, hdr42, DD42), DD42) is None
    assert check(msg(b"D", body[1:], hdr42, DD42), DD42) == (D.REJ_REQUIRED_MISSING, 11)


def test_missing_dictionary_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="FIX44.xml"):
        D.for_version("FIX.4.4", tmp_path)
    with pytest.raises(ValueError, match="no data dictionary"):
        D.for_version("FIX.5.0")
