"""Session state machine, two sessions wired in memory with an injected clock (no sockets)."""
from __future__ import annotations

import pytest

from appliance.fix import dictionary, wire
from appliance.fix.session import (Application, NotLoggedOn, Schedule, Session, SessionConfig)
from appliance.fix.store import MemoryStore
from tests.fix.helpers import Wire
from tests.fix.peer_proc import ExecApp, order_body

DD = dictionary.for_version("FIX.4.4")


class Recorder(Application):
    def __init__(self):
        self.msgs = []
        self.logons = 0
        self.logouts = 0

    def on_app_message(self, session, msg):
        self.msgs.append(msg)

    def on_logon(self, session):
        self.logons += 1

    def on_logout(self, session):
        self.logouts += 1


def make_pair(i_kw=None, a_kw=None, a_app=None, i_app=None):
    icfg = SessionConfig("FIX.4.4", "CLIENT", "EXCH", initiator=True, heartbeat_interval=10, **(i_kw or {}))
    acfg = SessionConfig("FIX.4.4", "EXCH", "CLIENT", **(a_kw or {}))
    ini = Session(icfg, MemoryStore(), i_app or Recorder(), DD)
    acc = Session(acfg, MemoryStore(), a_app or ExecApp(), DD)
    w = Wire(ini, acc)
    return w, ini, acc


def test_initiator_logs_on_and_orders_are_acknowledged():
    w, ini, acc = make_pair()
    w.connect()
    assert ini.logged_on and acc.logged_on
    for k in range(3):
        ini.send_app(b"D", order_body(f"C{k}", w.now))
    w.pump(ini.take_output())
    assert [m.get(11) for m in ini.app.msgs] == [b"C0", b"C1", b"C2"]
    assert ini.store.next_sender == 5 and acc.store.next_target == 5


def test_lost_messages_are_resent_with_possdup_and_admin_messages_gap_filled():
    w, ini, acc = make_pair()
    w.connect()
    # three exec reports and a heartbeat from the acceptor are lost on the wire
    for k in range(3):
        ini.send_app(b"D", order_body(f"C{k}", w.now))
    lost = acc.on_bytes(ini.take_output(), w.now)
    assert lost.count(b"35=8\x01") == 3
    acc._generate_heartbeat()
    acc.take_output()
    # the next order's report arrives: the initiator sees the gap and asks for a resend
    ini.send_app(b"D", order_body("C3", w.now))
    w.pump(ini.take_output())
    got = [(m.get_int(34), m.get(11), m.get(43)) for m in ini.app.msgs]
    assert [g[1] for g in got] == [b"C0", b"C1", b"C2", b"C3"]
    assert [g[2] for g in got[:3]] == [b"Y", b"Y", b"Y"]        # resent with PossDupFlag
    assert [g[0] for g in got] == [2, 3, 4, 6]                   # 5 (heartbeat) gap-filled
    assert ini.store.next_target == acc.store.next_sender
    assert ini.resend_range is None


def test_resent_message_carries_orig_sending_time():
    w, ini, acc = make_pair()
    w.connect()
    ini.send_app(b"D", order_body("C0", w.now))
    acc.on_bytes(ini.take_output(), w.now)
    acc.take_output()                            # report lost
    w.now += 5
    ini.send_app(b"D", order_body("C1", w.now))
    w.pump(ini.take_output())
    first = ini.app.msgs[0]
    assert first.get(43) == b"Y"
    assert first.get(122) == wire.utc_timestamp(w.now - 5)
    assert first.get(52) == wire.utc_timestamp(w.now)


def test_heartbeat_then_test_request_then_disconnect_on_silent_peer():
    w, ini, acc = make_pair()
    w.connect()
    t0 = w.now
    out = ini.on_timer(t0 + 10)                  # nothing sent for HeartBtInt: heartbeat
    assert b"35=0\x01" in out
    assert ini.on_timer(t0 + 11) == b""
    out = ini.on_timer(t0 + 12)                  # nothing received for 1.2 x HeartBtInt
    assert b"35=1\x01" in out and b"112=TEST\x01" in out
    assert not ini.closing
    ini.on_timer(t0 + 24)                        # 2.4 x HeartBtInt: the peer is gone
    assert ini.closing


def test_sequence_number_too_low_without_possdup_logs_out_and_disconnects():
    w, ini, acc = make_pair()
    w.connect()
    ini.store.set_next_sender(1)                 # a broken peer reuses sequence numbers
    ini.send_app(b"D", order_body("C0", w.now))
    out = acc.on_bytes(ini.take_output(), w.now)
    assert b"35=5\x01" in out and b"MsgSeqNum too low, expecting 2 but received 1" in out
    assert acc.closing


def test_send_app_before_logon_raises_not_logged_on():
    w, ini, acc = make_pair()
    with pytest.raises(NotLoggedOn):
        ini.send_app(b"D", order_body("C0", w.now))
    with pytest.raises(NotLoggedOn):
        ini.next_seq()


def test_next_seq_and_record_sent_share_numbers_and_store_with_the_session():
    w, ini, acc = make_pair()
    w.connect()
    seq = ini.next_seq()
    hdr = [(34, b"%d" % seq), (49, b"CLIENT"), (52, wire.utc_timestamp(w.now)), (56, b"EXCH")]
    raw = wire.encode(b"FIX.4.4", b"D", hdr, order_body("EXT1", w.now))
    ini.record_sent(seq, raw, w.now, enqueue=True)
    ini.send_app(b"D", order_body("C1", w.now))
    w.pump(ini.take_output())
    assert [m.get(11) for m in ini.app.msgs] == [b"EXT1", b"C1"]
    assert ini.store.get_messages(seq, seq) == [(seq, raw)]


def test_logout_exchange_and_reset_on_logout_policy():
    w, ini, acc = make_pair(i_kw={"reset_on_logout": True})
    w.connect()
    ini.send_app(b"D", order_body("C0", w.now))
    w.pump(ini.take_output())
    w.pump(ini.logout("bye"))
    assert ini.closing and acc.closing
    assert ini.store.next_sender == 1 and ini.store.next_target == 1
    assert acc.store.next_target > 1              # the acceptor has no reset policy


def test_reset_on_disconnect_policy_resets_store_when_connection_drops():
    w, ini, acc = make_pair(i_kw={"reset_on_disconnect": True})
    w.connect()
    ini.disconnected(w.now)
    assert ini.store.next_sender == 1 and ini.app.logouts == 1


def test_initiator_with_reset_on_logon_sends_reset_seq_num_flag():
    w, ini, acc = make_pair(i_kw={"reset_on_logon": True})
    out = ini.connected(w.now)
    assert b"141=Y\x01" in out


def test_logon_outside_schedule_is_refused():
    # 1_700_000_000 is 22:13:20 UTC
    w, ini, acc = make_pair(a_kw={"schedule": Schedule("08:00:00", "17:00:00")})
    acc.connected(w.now)
    out = acc.on_bytes(ini.connected(w.now), w.now)
    assert out == b"" and acc.closing


def test_schedule_window_across_midnight():
    s = Schedule("22:00:00", "06:00:00")
    assert s.in_session(1_700_000_000.0)                    # 22:13
    assert not s.in_session(1_700_000_000.0 + 10 * 3600)    # 08:13
    assert Schedule().in_session(0.0)


def test_new_schedule_period_resets_sequence_numbers_on_connect():
    w, ini, acc = make_pair(i_kw={"schedule": Schedule("22:00:00", "21:00:00")})
    ini.store.set_next_sender(40)
    ini.store.creation_time = w.now - 86400
    ini.connected(w.now)
    assert ini.store.next_sender == 2             # reset to 1, then the Logon took 1


def test_session_config_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="fix.session.hartbeat_interval: unknown key"):
        SessionConfig.from_dict({"begin_string": "FIX.4.4", "sender_comp_id": "A",
                                 "target_comp_id": "B", "hartbeat_interval": 5})
    c = SessionConfig.from_dict({"begin_string": "FIX.4.2", "sender_comp_id": "A", "target_comp_id": "B",
                                 "schedule": {"start": "00:00:00", "end": "23:00:00"}})
    assert c.schedule.end == "23:00:00"
    with pytest.raises(ValueError, match="begin_string"):
        SessionConfig("FIX.5.0", "A", "B")


def test_garbled_and_truncated_bytes_are_ignored_and_counted():
    w, ini, acc = make_pair()
    w.connect()
    ini.send_app(b"D", order_body("C0", w.now))
    good = ini.take_output()
    bad_sum = good[:-4] + b"000\x01"
    assert acc.on_bytes(b"\x00\xffGARBAGE 8=FIZ\x01noise\x01", w.now) == b""
    assert acc.on_bytes(bad_sum, w.now) == b"" and acc.garbled == 1
    # a truncated message waits for its declared length and swallows what follows up to the
    # next trailer (reference framing): the next good message is lost with it, garbled
    assert acc.on_bytes(good[: len(good) // 2], w.now) == b""
    assert acc.on_bytes(good, w.now) == b""
    assert acc.garbled == 2 and not acc.closing and acc.store.next_target == 2
    # the peer's next message is too high: ResendRequest, C0 comes back as a possible duplicate
    ini.send_app(b"D", order_body("C1", w.now))
    w.pump(ini.take_output())
    assert [m.get(11) for m in ini.app.msgs] == [b"C0", b"C1"]
    assert acc.store.next_target == 4


class Exploding(Recorder):
    def on_app_message(self, session, msg):
        raise KeyError("bug in the application")


def test_application_error_answers_business_reject_and_session_survives():
    w, ini, acc = make_pair(a_app=Exploding())
    w.connect()
    ini.send_app(b"D", order_body("C0", w.now))
    out = acc.on_bytes(ini.take_output(), w.now)
    rej = wire.parse(out)
    assert (rej.msg_type, rej.get(380), rej.get(58)) == (b"j", b"4", b"Application error")
    assert not acc.closing and acc.store.next_target == 3


def test_bad_heartbeat_interval_in_logon_is_rejected_and_disconnected():
    w, ini, acc = make_pair()
    acc.connected(w.now)
    logon = ini.connected(w.now).replace(b"108=10\x01", b"108=-5\x01")
    fixed = wire.parse(logon)
    raw = wire.encode(b"FIX.4.4", b"A", [f for f in fixed.fields if f[0] in (34, 49, 52, 56)],
                      [(98, b"0"), (108, b"-5")])
    assert acc.on_bytes(raw, w.now) == b"" and acc.closing


def test_peer_flooding_messages_behind_a_gap_is_logged_out_at_the_queue_cap():
    w, ini, acc = make_pair(a_kw={"max_queued": 5})
    w.connect()
    ini.store.set_next_sender(10)                  # a gap the peer never fills
    for k in range(6):
        ini.send_app(b"D", order_body(f"C{k}", w.now))
    out = acc.on_bytes(ini.take_output(), w.now)
    assert b"too many out-of-order messages (5)" in out and acc.closing


class AdminRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.admin = []

    def on_admin_message(self, session, msg):
        self.admin.append(msg)


def test_session_reject_of_our_order_reaches_the_application():
    app = AdminRecorder()
    w, ini, acc = make_pair(i_app=app)
    w.connect()
    ini.send_app(b"D", order_body("C0", w.now)[:-1])          # TransactTime (60) missing
    w.pump(ini.take_output())
    rej = [m for m in app.admin if m.msg_type == b"3"]
    assert len(rej) == 1 and (rej[0].get(45), rej[0].get(371), rej[0].get(373)) == (b"2", b"60", b"1")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60),
                          st.sampled_from([b"8=FIX.4.4\x01", b"9=", b"\x0110=", b"35=D\x01", b"34=-1\x01",
                                           b"8=FIX.4.4\x019=99999999\x01", b"\x01", b"="])),
                max_size=30))
def test_random_bytes_into_a_logged_on_session_never_raise(chunks):
    w, ini, acc = make_pair()
    w.connect()
    for c in chunks:
        out = acc.on_bytes(c, w.now)
        assert isinstance(out, bytes)
    assert isinstance(acc.on_timer(w.now + 1), bytes)
    assert acc.closing or acc.logged_on    # either a clean disconnect decision or still up
