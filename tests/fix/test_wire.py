"""Framing and parsing: input in pieces, garbage, against simplefix as the reference codec."""
from __future__ import annotations


import simplefix
from hypothesis import given, settings, strategies as st

from appliance.fix import wire


def sample(seq=2, **extra):
    body = [(11, b"ID%d" % seq), (21, b"3"), (40, b"1"), (54, b"1"), (55, b"INTC")]
    return wire.encode(b"FIX.4.4", b"D", [(34, b"%d" % seq), (49, b"TW44"), (52, b"20240101-00:00:00.000"),
                                          (56, b"ISLD")], body)


def frames(data: bytes, chunk: int):
    f = wire.Framer()
    out = []
    for i in range(0, len(data), chunk):
        f.feed(data[i:i + chunk])
        while (fr := f.next_frame()) is not None:
            out.append(fr)
    return out


def test_encoded_message_parses_identically_with_simplefix():
    raw = sample()
    p = simplefix.FixParser()
    p.append_buffer(raw)
    ref = p.get_message()
    ours = wire.parse(raw)
    assert [(int(t), v) for t, v in ref.pairs] == ours.fields
    assert ours.fields[-1] == (10, b"%03d" % (sum(raw[:raw.rindex(b"10=")]) % 256))


def test_stream_cut_at_every_size_yields_the_same_frames():
    data = b"".join(sample(s) for s in range(2, 7))
    whole = frames(data, len(data))
    assert [st for st, _ in whole] == [wire.FRAME_OK] * 5
    for chunk in (1, 2, 3, 7, 64):
        assert frames(data, chunk) == whole


def test_take_frames_burst_path_equals_frame_by_frame_path():
    good = [sample(s) for s in range(2, 40)]
    data = b"".join(good[:10]) + good[10][:-4] + b"999\x01" + b"junk" + b"".join(good[11:]) + good[0][:30]
    slow = frames(data, len(data))
    f = wire.Framer()
    f.feed(data)
    fast = f.take_frames()
    assert fast == slow and bytes(f.buf) == good[0][:30]
    assert [fr for st, fr in fast if st == wire.FRAME_OK] == good[:10] + good[11:]


def test_bad_checksum_and_bad_body_length_are_garbled_and_next_message_survives():
    good = sample(3)
    bad_sum = sample(2)[:-4] + b"999\x01"
    short = sample(2).replace(b"9=", b"9=1", 1)       # declared length larger than the message
    out = frames(bad_sum + good, 5)
    assert [s for s, _ in out] == [wire.FRAME_GARBLED, wire.FRAME_OK]
    assert out[1][1] == good
    out = frames(short + good + sample(4), 1000)
    assert out[-1] == (wire.FRAME_OK, sample(4))


def test_non_numeric_tag_and_wrong_first_fields_are_garbled():
    for raw in (b"8=FIX.4.4\x019=5\x0135=0\x01x4=1\x0110=000\x01",
                b"8=FIX.4.4\x019=5\x0134=1\x0135=0\x0110=000\x01"):
        try:
            wire.parse(raw)
        except wire.GarbledMessage:
            continue
        raise AssertionError(f"{raw!r} parsed")


def test_negative_and_zero_tags_parse_for_later_rejection():
    m = wire.parse(b"8=FIX.4.4\x019=5\x0135=0\x01-1=HI\x010=X\x0110=000\x01")
    assert (-1, b"HI") in m.fields and (0, b"X") in m.fields


def test_timestamps_round_trip_and_malformed_are_none():
    assert wire.utc_timestamp(1_700_000_000.25) == b"20231114-22:13:20.250"
    assert wire.parse_utc_timestamp(b"20231114-22:13:20.250") == 1_700_000_000.25
    for bad in (b"20231314-22:13:20", b"2023111-22:13:20", b"20231114 22:13:20", b""):
        assert wire.parse_utc_timestamp(bad) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(1, 50), st.randoms())
def test_garbage_interleaved_with_messages_never_raises_and_loses_no_clean_message(junks, chunk, rnd):
    msgs = [sample(s) for s in range(2, 2 + len(junks) + 1)]
    data = b""
    for i, m in enumerate(msgs):
        data += m
        if i < len(junks):
            data += junks[i].replace(b"8=", b"").replace(b"\x0110=", b"")
    got = [f for s, f in frames(data, chunk) if s == wire.FRAME_OK]
    # junk between messages may at worst corrupt the message it precedes, never two
    assert len(got) >= len(msgs) - len(junks) and all(f in msgs for f in got)
