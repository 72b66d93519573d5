"""Secrets never in clear: the appliance runs with FIX credentials and a signed logon configured
(exchange, gateway, journal recorder, ``status``, ``journal cat``: real processes), then every
file it wrote and everything it printed is searched for the password and the signing key."""
from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.fix import admin, wire
from appliance.sim import exchange as X  # noqa: F401  (the exchange runs as a process below)
from appliance.transport import records as R
from tests.fix.helpers import VENUE_TOML, free_port
from tests.fix.test_gateway_recovery import Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _write_private(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def _files(*roots):
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                yield Path(dirpath) / n


@pytest.mark.parametrize("signature", ["hmac-sha256", "ed25519"])
def test_no_file_written_and_nothing_printed_holds_the_password_or_key(shm_dir, tmp_path, signature):
    password = ("pw-" + secrets.token_hex(12)).encode()
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o700)
    creds = _write_private(secret_dir / "venue.toml", b'username = "alice"\npassword = "%s"\n' % password)
    if signature == "hmac-sha256":
        raw_key = secrets.token_bytes(32)
        key_file = _write_private(secret_dir / "hmac.key", base64.b64encode(raw_key))
        needles = [password, raw_key, base64.b64encode(raw_key)]
    else:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        seed = secrets.token_bytes(32)
        Ed25519PrivateKey.from_private_bytes(seed)
        key_file = _write_private(secret_dir / "ed25519.key", base64.b64encode(seed))
        needles = [password, seed, base64.b64encode(seed)]
    port = free_port()
    state = tmp_path / "state"
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{state}"
journal_dir = "{tmp_path}/journal"
[wait]
strategy = "backoff"
backoff_max_ns = 200000
{VENUE_TOML}
[fix.sessions.sec]
host = "127.0.0.1"
port = {port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
credentials_file = "{creds}"
logon_signature = "{signature}"
signing_key_file = "{key_file}"
venue = "binance"
""")
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    base = [sys.executable, "-m", "appliance.cli", "--config", str(cfg), "-v"]
    outs = {}
    procs = {}

    def spawn(name, *args):
        procs[name] = subprocess.Popen(base + list(args), env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
        return procs[name]

    e = Engine(shm_dir, exec_ring="exec.sec")
    try:
        ex = spawn("exchange", "fix", "exchange", "--port", str(port), "--ref", "BTCUSDT=100.00",
                   "--store", str(tmp_path / "venue"))
        assert ex.stdout.readline().startswith(b"listening")
        gw = spawn("gateway", "fix", "gateway", "--session", "sec")
        e.attach(proc=gw)
        spawn("recorder", "recorder", "--rings", "orders,exec.sec", "--dir", str(tmp_path / "journal"))
        e.wait_state(R.SESSION_RECONCILED, timeout=120)
        oid = e.new_order(10_100)
        e.next_records(lambda r: r["rtype"] == R.RT_FILL and r["clord_id"] == oid)
        time.sleep(0.5)
        st = subprocess.run(base + ["status"], env=env, capture_output=True, timeout=120)
        outs["status"] = st.stdout + st.stderr
        for name in ("recorder", "gateway", "exchange"):
            procs[name].send_signal(signal.SIGTERM)
            out, err = procs[name].communicate(timeout=60)
            outs[name] = out + err
        cat = subprocess.run(base + ["journal", "cat", str(tmp_path / "journal")], env=env,
                             capture_output=True, timeout=120)
        outs["journal cat"] = cat.stdout + cat.stderr
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        e.close()
    # the logon carried the credentials and a signature: the exchange's message log is not on,
    # but ours is, and shows them redacted
    mlog = (state / "fix" / "sec" / "messages.log").read_bytes()
    logon = [ln for ln in mlog.splitlines() if b"|35=A|" in ln and b" OUT " in ln]
    assert logon and b"|553=alice|" in logon[0] and b"|554=***|" in logon[0] and b"|96=***|" in logon[0]
    assert b"accepted connection" in outs["exchange"] or b"logon" in outs["exchange"].lower()
    written = [p for p in _files(tmp_path, shm_dir) if secret_dir not in p.parents]
    assert len(written) > 10
    for p in written:
        data = p.read_bytes()
        for n in needles:
            assert n not in data, f"{p} holds a secret"
        assert b"554=" not in data.replace(b"554=***", b""), f"{p} holds a Password field"
        assert b"\x0196=" not in data.replace(b"\x0196=***", b""), f"{p} holds a RawData field"
    for name, text in outs.items():
        for n in needles:
            assert n not in text, f"{name} printed a secret"
    # the store keeps what it may resend (0600 files in 0700 directories), the Logon redacted
    for d in (state / "fix" / "sec", tmp_path / "venue"):
        for p in _files(d):
            assert p.stat().st_mode & 0o077 == 0, p
        assert d.stat().st_mode & 0o077 == 0


def test_secret_values_never_show_in_repr_str_or_exceptions(tmp_path):
    p = Path(_write_private(tmp_path / "c.toml", b'username = "bob"\npassword = "hunter2"\n'))
    creds = admin.read_credentials(p)
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    assert dict(creds)[554] == b"hunter2"
    bad = Path(_write_private(tmp_path / "bad.toml", b'password = "hunter2\n'))
    with pytest.raises(admin.CredentialFileError) as ei:
        admin.read_credentials(bad)
    assert "hunter2" not in str(ei.value)
    assert wire.pretty(b"8=FIX.4.4\x0135=A\x01554=hunter2\x0110=000\x01") == "8=FIX.4.4|35=A|554=***|10=000|"


def test_ed25519_signed_logon_verifies_at_the_acceptor_and_a_wrong_key_does_not(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.fix.session import Session, SessionConfig
    from appliance.fix.store import MemoryStore
    seed = secrets.token_bytes(32)
    kf = _write_private(tmp_path / "ed.key", base64.b64encode(seed))
    hook = admin.logon_hook("", "ed25519", kf)
    s = Session(SessionConfig(begin_string="FIX.4.4", sender_comp_id="A", target_comp_id="B", initiator=True),
                MemoryStore(), now=time.time())

    class App:
        logon_hook = None

        def logon_fields(self, session):
            return hook(session)
    s.app = App()
    raw = s.connected(time.time())
    msg = wire.parse(raw)
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert admin.verify_ed25519_logon(pub, msg, b"A", b"B")
    assert not admin.verify_ed25519_logon(Ed25519PrivateKey.generate().public_key(), msg, b"A", b"B")
    assert not admin.verify_ed25519_logon(pub, msg, b"A", b"C")
    os.chmod(kf, 0o640)
    with pytest.raises(admin.CredentialFileError, match="0600"):
        admin.logon_hook("", "ed25519", kf)
    with pytest.raises(admin.CredentialFileError, match="signing_key_file"):
        admin.logon_hook("", "ed25519", "")
    assert np.frombuffer(seed, np.uint8).size == 32
    # user name and password from the credentials file go out as they are (the wire needs them)
    cf = _write_private(tmp_path / "c.toml", b'username = "u1"\npassword = "pw-on-the-wire"\n')
    hook = admin.logon_hook(cf)
    s2 = Session(SessionConfig(begin_string="FIX.4.4", sender_comp_id="A", target_comp_id="B", initiator=True),
                 MemoryStore(), App(), now=time.time())
    raw = s2.connected(time.time())
    assert b"\x01553=u1\x01554=pw-on-the-wire\x01" in raw
    assert s2.store.get_messages(1, 1)[0][1] == wire.redact(raw)      # stored without it
