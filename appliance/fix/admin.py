"""Logon credential hooks for venue sessions (``Application.logon_fields``).

Secrets are never inline in the config: each hook reads them from a file that must be owned by
the current user and not readable by group or others (mode 0600 or stricter).

- ``UserPasswordLogon(username, password_file)``: Username (553) / Password (554).
- ``HmacRawDataLogon(key_file, ...)``: RawDataLength (95) / RawData (96) carrying
  base64(HMAC-SHA256(key, prehash)), where prehash joins SendingTime, MsgType, MsgSeqNum,
  SenderCompID, TargetCompID (and the password, if one is given) with SOH, the signature scheme
  several crypto venues use for FIX logon. The Logon's own MsgSeqNum and SendingTime are signed
  (the session exposes them as ``logon_seq`` / ``logon_sending_time`` while the hook runs).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path


class CredentialFileError(PermissionError):
    """A credential file is missing, empty, or readable by others."""


def read_secret(path) -> bytes:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CredentialFileError(f"credential file {p} does not exist") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialFileError(
            f"credential file {p} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 (chmod 600 {p})")
    if st.st_uid != os.getuid():
        raise CredentialFileError(f"credential file {p} is not owned by the current user")
    data = p.read_bytes().strip()
    if not data:
        raise CredentialFileError(f"credential file {p} is empty")
    return data


class UserPasswordLogon:
    def __init__(self, username: str, password_file):
        self.username = username.encode()
        self.password = read_secret(password_file)

    def __call__(self, session) -> list:
        return [(553, self.username), (554, self.password)]


class HmacRawDataLogon:
    def __init__(self, key_file, password_file=None, key_is_base64: bool = True):
        key = read_secret(key_file)
        self.key = base64.b64decode(key) if key_is_base64 else key
        self.password = read_secret(password_file) if password_file else None

    def prehash(self, session) -> bytes:
        parts = [session.logon_sending_time, b"A", b"%d" % session.logon_seq, session.sender, session.target]
        if self.password is not None:
            parts.append(self.password)
        return b"\x01".join(parts)

    def signature(self, session) -> bytes:
        return base64.b64encode(hmac.new(self.key, self.prehash(session), hashlib.sha256).digest())

    def __call__(self, session) -> list:
        sig = self.signature(session)
        fields = [(95, b"%d" % len(sig)), (96, sig)]
        if self.password is not None:
            fields.append((554, self.password))
        return fields


def verify_hmac_logon(key: bytes, msg, sender: bytes, target: bytes, password: bytes | None = None) -> bool:
    """Acceptor side: check a Logon's RawData signature (as an exchange simulator would)."""
    prehash = [msg.get(52, b""), b"A", msg.get(34, b""), sender, target]
    if password is not None:
        prehash.append(password)
    want = base64.b64encode(hmac.new(key, b"\x01".join(prehash), hashlib.sha256).digest())
    return hmac.compare_digest(want, msg.get(96, b""))
