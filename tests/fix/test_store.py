"""Persistent store: recovery after SIGKILL of a real writer process, torn records, reset."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from appliance import fsutil
from appliance.fix.store import FileStore, MessageLog, StoreError

WRITER = textwrap.dedent("""
    import sys
    from appliance.fix.store import FileStore
    st = FileStore(sys.argv[1], fsync=sys.argv[2])
    seq = st.next_sender
    while True:
        raw = b"8=FIX.4.4\\x019=5\\x0135=D\\x0134=%d\\x01" % seq + b"x" * (seq % 97)
        st.save_message(seq, raw)
        st.incr_next_sender()
        st.sync()
        print(seq, flush=True)
        seq += 1
""")


@pytest.mark.parametrize("policy", ["batch", "none"])
def test_messages_and_seqnums_survive_sigkill_of_writer_process(tmp_path, policy):
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), policy],
                         stdout=subprocess.PIPE, text=True)
    last = 0
    while last < 300:
        line = p.stdout.readline()
        assert line, "writer died"
        last = int(line)
    p.send_signal(signal.SIGKILL)
    p.wait()
    st = FileStore(tmp_path)
    assert st.next_sender >= last + 1
    msgs = dict(st.get_messages(1, last))
    assert sorted(msgs) == list(range(1, last + 1))
    for seq in (1, last // 2, last):
        assert msgs[seq] == b"8=FIX.4.4\x019=5\x0135=D\x0134=%d\x01" % seq + b"x" * (seq % 97)
    # at most the one message being written at the kill is stored but not yet counted; it was
    # never sent, so a restarted writer may reuse its number (the store keeps the newer bytes)
    assert st.next_sender - 1 <= max(st.index) <= st.next_sender


def test_torn_last_record_is_truncated_and_earlier_ones_kept(tmp_path, caplog):
    st = FileStore(tmp_path)
    for s in range(1, 4):
        st.save_message(s, b"msg%d" % s)
    st.close()
    with open(tmp_path / "messages", "ab") as f:
        f.write(b"\x31\x58\x49\x46" + b"\x04" * 10)          # half a record header
    st = FileStore(tmp_path)
    assert [s for s, _ in st.get_messages(1, 10)] == [1, 2, 3]
    assert st.truncated_bytes == 14
    st.save_message(4, b"msg4")
    st.close()
    assert [r for _, r in FileStore(tmp_path).get_messages(1, 10)] == [b"msg1", b"msg2", b"msg3", b"msg4"]


def test_corrupt_record_crc_stops_recovery_at_that_record(tmp_path):
    st = FileStore(tmp_path)
    st.save_message(1, b"first")
    st.save_message(2, b"second")
    st.close()
    data = bytearray((tmp_path / "messages").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "messages").write_bytes(bytes(data))
    assert [s for s, _ in FileStore(tmp_path).get_messages(1, 5)] == [1]


def test_reset_clears_messages_and_sequence_numbers(tmp_path):
    st = FileStore(tmp_path, fsync="always")
    st.save_message(1, b"a")
    st.set_next_sender(7)
    st.set_next_target(9)
    st.reset(now=123.0)
    st.close()
    st = FileStore(tmp_path)
    assert (st.next_sender, st.next_target, st.index, st.creation_time) == (1, 1, {}, 123.0)


def test_unknown_fsync_policy_and_unreadable_seqnums_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="fsync policy"):
        FileStore(tmp_path, fsync="sometimes")
    (tmp_path / "seqnums").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="seqnums"):
        FileStore(tmp_path)


def test_store_files_are_private(tmp_path):
    FileStore(tmp_path / "s").close()
    for name in ("seqnums", "messages"):
        assert os.stat(tmp_path / "s" / name).st_mode & 0o077 == 0


def test_message_log_writes_readable_lines(tmp_path):
    ml = MessageLog(tmp_path / "m.log")
    ml.write("IN ", 0.5, b"8=FIX.4.4\x0135=0\x01", "note")
    ml.close()
    assert (tmp_path / "m.log").read_bytes() == b"19700101-00:00:00.500000 IN  8=FIX.4.4|35=0| # note\n"


def test_store_and_message_log_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        st = FileStore(tmp_path / "state" / "fix" / "s1")
        st.save_message(1, b"8=FIX.4.4\x0135=A\x01554=hunter2\x01")
        st.reset()
        ml = MessageLog(tmp_path / "state" / "fix" / "s1" / "messages.log")
        ml.write("OUT", 0.0, b"x")
        ml.close()
        st.close()
    finally:
        os.umask(old)
    for p in [tmp_path / "state", tmp_path / "state" / "fix", tmp_path / "state" / "fix" / "s1"]:
        assert oct(p.stat().st_mode & 0o777) == oct(0o700), p
    for p in (tmp_path / "state" / "fix" / "s1").iterdir():
        assert oct(p.stat().st_mode & 0o777) == oct(0o600), p


def test_message_log_redacts_password_new_password_and_signature(tmp_path):
    ml = MessageLog(tmp_path / "m.log")
    ml.write("OUT", 0.0, b"8=FIX.4.4\x019=60\x0135=A\x01553=alice\x01554=hunter2\x01925=hunter3\x01"
                         b"95=7\x0196=si\x01g\x01na\x0110=000\x01")
    ml.close()
    text = (tmp_path / "m.log").read_bytes()
    for secret in (b"hunter2", b"hunter3", b"si|g|na", b"na|10", b"g|"):
        assert secret not in text
    assert b"553=alice|554=***|925=***|95=7|96=***|10=000|" in text


def test_store_rotates_segments_and_stays_bounded(tmp_path):
    st = FileStore(tmp_path, segment_bytes=8192, max_segments=3)
    body = b"x" * 200
    for seq in range(1, 2001):
        st.save_message(seq, b"8=FIX.4.4\x0134=%d\x01" % seq + body)
    total = sum(p.stat().st_size for p in tmp_path.glob("messages*"))
    assert total <= 3 * (8192 + 300)
    assert st.rotations > 0 and len(list(tmp_path.glob("messages.*"))) == 2
    kept = [s for s, _ in st.get_messages(1, 2000)]
    assert kept[-1] == 2000 and kept == list(range(kept[0], 2001)) and kept[0] > 1
    st.close()
    st = FileStore(tmp_path, segment_bytes=8192, max_segments=3)    # reopen: same index
    assert [s for s, _ in st.get_messages(1, 2000)] == kept
    assert st.get_messages(2000, 2000)[0][1].endswith(body)
    st.close()


def test_message_log_rotates_by_size(tmp_path):
    ml = MessageLog(tmp_path / "m.log", max_bytes=4096, keep=2)
    for i in range(200):
        ml.write("IN ", float(i), b"8=FIX.4.4\x0135=0\x01" + b"y" * 50)
    ml.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", "m.log.1", "m.log.2"]
    assert all(p.stat().st_size < 4096 + 200 for p in tmp_path.iterdir())


def _count_dir_fsyncs(monkeypatch) -> list:
    synced = []
    real = fsutil.fsync_dir

    def spy(path):
        synced.append(str(path))
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", spy)
    return synced


@pytest.mark.parametrize("policy, durable", [("always", True), ("batch", True), ("none", False)])
def test_session_file_and_segment_rotation_are_durable_unless_policy_none(tmp_path, monkeypatch,
                                                                        policy, durable):
    synced = _count_dir_fsyncs(monkeypatch)
    st = FileStore(tmp_path, fsync=policy, segment_bytes=4096, max_segments=2)
    assert synced == ([str(tmp_path)] if durable else [])         # the session file
    assert (tmp_path / "session").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messages", "seqnums", "session"]
    del synced[:]
    for seq in range(1, 60):
        st.save_message(seq, b"x" * 200)
    assert st.rotations > 0
    assert len(synced) == (st.rotations if durable else 0)
    st.reset(now=5.0)
    st.close()
    assert FileStore(tmp_path).creation_time == 5.0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_message_log_rotation_does_not_fsync(tmp_path, monkeypatch):
    synced = _count_dir_fsyncs(monkeypatch)
    ml = MessageLog(tmp_path / "m.log", max_bytes=4096, keep=2)
    for i in range(200):
        ml.write("IN ", float(i), b"8=FIX.4.4\x0135=0\x01" + b"y" * 50)
    ml.close()
    assert (tmp_path / "m.log.2").exists() and synced == []
