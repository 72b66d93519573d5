"""Logon credential hooks: Username/Password and HMAC-signed RawData from 0600 files."""
from __future__ import annotations

import base64
import os

import pytest

from appliance.fix import admin, dictionary, wire
from appliance.fix.session import Application, Session, SessionConfig
from appliance.fix.store import MemoryStore

DD = dictionary.for_version("FIX.4.4")


def secret(tmp_path, name, data, mode=0o600):
    p = tmp_path / name
    p.write_bytes(data)
    os.chmod(p, mode)
    return p


def initiator(hook):
    app = Application()
    app.logon_hook = hook
    return Session(SessionConfig("FIX.4.4", "CLIENT", "VENUE", initiator=True), MemoryStore(), app, DD,
                   now=1_700_000_000.0)


def test_username_password_fields_are_added_to_logon(tmp_path):
    s = initiator(admin.UserPasswordLogon("alice", secret(tmp_path, "pw", b"s3cret\n")))
    logon = wire.parse(s.connected(1_700_000_000.0))
    assert (logon.get(553), logon.get(554)) == (b"alice", b"s3cret")


def test_hmac_rawdata_signs_this_logons_seq_and_sending_time(tmp_path):
    key = os.urandom(32)
    s = initiator(admin.HmacRawDataLogon(secret(tmp_path, "key", base64.b64encode(key))))
    logon = wire.parse(s.connected(1_700_000_000.0))
    assert int(logon.get(95)) == len(logon.get(96))
    assert admin.verify_hmac_logon(key, logon, b"CLIENT", b"VENUE")
    assert not admin.verify_hmac_logon(b"wrong" * 8, logon, b"CLIENT", b"VENUE")
    # the signature survives our own parser even though RawData may hold any byte
    assert wire.parse(logon.raw).get(96) == logon.get(96)


def test_rawdata_containing_soh_is_parsed_by_length():
    raw = wire.encode(b"FIX.4.4", b"A", [(34, b"1"), (49, b"A"), (52, b"20240101-00:00:00"), (56, b"B")],
                      [(95, b"5"), (96, b"a\x01b=c"), (98, b"0"), (108, b"30")])
    m = wire.parse(raw)
    assert m.get(96) == b"a\x01b=c" and m.get(98) == b"0"


def test_credential_file_readable_by_others_is_refused_with_chmod_hint(tmp_path):
    with pytest.raises(admin.CredentialFileError, match="chmod 600"):
        admin.UserPasswordLogon("alice", secret(tmp_path, "pw", b"x", mode=0o644))


def test_missing_or_empty_credential_file_is_a_clear_error(tmp_path):
    with pytest.raises(admin.CredentialFileError, match="does not exist"):
        admin.read_secret(tmp_path / "nope")
    with pytest.raises(admin.CredentialFileError, match="empty"):
        admin.read_secret(secret(tmp_path, "e", b"\n"))
