"""Logon credential hooks for venue sessions (``Application.logon_fields``).

Secrets are never inline in the config: each hook reads them from a file that must be owned by
the current user and not readable by group or others (mode 0600 or stricter). Secret values are
``Secret`` objects whose ``repr``/``str`` print ``***``, so an exception or a log line that shows
one never shows the value.

- ``UserPasswordLogon(username, password_file)``: Username (553) / Password (554).
- ``HmacRawDataLogon(key_file, ...)``: RawDataLength (95) / RawData (96) carrying
  base64(HMAC-SHA256(key, prehash)), where prehash joins SendingTime, MsgType, MsgSeqNum,
  SenderCompID, TargetCompID (and the password, if one is given) with SOH, the signature scheme
  several crypto venues use for FIX logon. The Logon's own MsgSeqNum and SendingTime are signed
  (the session exposes them as ``logon_seq`` / ``logon_sending_time`` while the hook runs).
- ``Ed25519RawDataLogon(key_file, ...)``: the same prehash signed with an Ed25519 private key
  (PEM PKCS#8, or the raw 32-byte seed in base64), RawData = base64(signature), as venues with
  Ed25519 API keys document it; ``verify_ed25519_logon`` is the acceptor side.
- ``logon_hook(credentials_file, signature, key_file)``: the hook a gateway session uses, from
  its ``[fix.sessions.NAME]`` keys (``credentials_file`` a TOML file with ``username`` and/or
  ``password``; ``logon_signature`` "" | "hmac-sha256" | "ed25519" with ``signing_key_file``).
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


class Secret(bytes):
    """Bytes of a secret: usable as a field value, never printed (``repr``/``str`` -> ``***``)."""

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def _check_private(p: Path) -> os.stat_result:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CredentialFileError(f"credential file {p} does not exist") from None
    except OSError as e:
        raise CredentialFileError(f"credential file {p}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialFileError(
            f"credential file {p} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 (chmod 600 {p})")
    if st.st_uid != os.getuid():
        raise CredentialFileError(f"credential file {p} is not owned by the current user")
    return st


def read_credentials(path) -> list:
    """Username (553) / Password (554) from a TOML file (keys ``username``, ``password``) that
    only its owner can read. The password comes back as a ``Secret``."""
    import tomllib
    p = Path(path)
    _check_private(p)
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        # the parser's message may quote the line holding the password: never repeat it
        raise CredentialFileError(f"credential file {p} is not valid TOML ({type(e).__name__})") from None
    unknown = set(data) - {"username", "password"}
    if unknown:
        raise CredentialFileError(f"credential file {p}: unknown keys {sorted(unknown)} (known: username, password)")
    out = []
    if "username" in data:
        out.append((553, str(data["username"]).encode()))
    if "password" in data:
        out.append((554, Secret(str(data["password"]).encode())))
    if not out:
        raise CredentialFileError(f"credential file {p} has neither username nor password")
    return out


def read_secret(path) -> bytes:
    p = Path(path)
    _check_private(p)
    data = p.read_bytes().strip()
    if not data:
        raise CredentialFileError(f"credential file {p} is empty")
    return Secret(data)


class UserPasswordLogon:
    def __init__(self, username: str, password_file):
        self.username = username.encode()
        self.password = read_secret(password_file)

    def __call__(self, session) -> list:
        return [(553, self.username), (554, self.password)]


class HmacRawDataLogon:
    def __init__(self, key_file, password_file=None, key_is_base64: bool = True):
        key = read_secret(key_file)
        try:
            self.key = Secret(base64.b64decode(key, validate=True)) if key_is_base64 else key
        except ValueError:
            raise CredentialFileError(f"signing key file {key_file}: not base64") from None
        self.password = read_secret(password_file) if password_file else None

    def prehash(self, session) -> bytes:
        parts = [session.logon_sending_time, b"A", b"%d" % session.logon_seq, session.sender, session.target]
        if self.password is not None:
            parts.append(self.password)
        return b"\x01".join(parts)

    def signature(self, session) -> bytes:
        return base64.b64encode(hmac.new(self.key, self.prehash(session), hashlib.sha256).digest())

    def __call__(self, session) -> list:
        sig = Secret(self.signature(session))
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


def _prehash(sending_time: bytes, seq: bytes, sender: bytes, target: bytes, password) -> bytes:
    parts = [sending_time, b"A", seq, sender, target]
    if password is not None:
        parts.append(password)
    return b"\x01".join(parts)


def load_ed25519_private_key(key_file):
    """An Ed25519 private key from a 0600 file: PEM (PKCS#8) or the base64 32-byte seed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    data = read_secret(key_file)
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(bytes(data), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(bytes(data), validate=True))
    except (ValueError, TypeError):
        raise CredentialFileError(f"signing key file {key_file}: not an Ed25519 private key "
                                  f"(PEM PKCS#8 or base64 of the 32-byte seed)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialFileError(f"signing key file {key_file}: not an Ed25519 key")
    return key


class Ed25519RawDataLogon:
    """RawDataLength (95) / RawData (96) = base64(Ed25519 signature of the logon prehash)."""

    def __init__(self, key_file, password_file=None):
        self._key = load_ed25519_private_key(key_file)
        self.password = read_secret(password_file) if password_file else None

    def prehash(self, session) -> bytes:
        return _prehash(session.logon_sending_time, b"%d" % session.logon_seq, session.sender,
                        session.target, self.password)

    def signature(self, session) -> bytes:
        return base64.b64encode(self._key.sign(self.prehash(session)))

    def __call__(self, session) -> list:
        sig = Secret(self.signature(session))
        fields = [(95, b"%d" % len(sig)), (96, sig)]
        if self.password is not None:
            fields.append((554, self.password))
        return fields


def verify_ed25519_logon(public_key, msg, sender: bytes, target: bytes, password: bytes | None = None) -> bool:
    """Acceptor side: check a Logon's Ed25519 RawData signature (``public_key``: an
    ``Ed25519PublicKey``); ``sender``/``target`` as the initiator sent them."""
    from cryptography.exceptions import InvalidSignature
    try:
        sig = base64.b64decode(msg.get(96, b""), validate=True)
        public_key.verify(sig, _prehash(msg.get(52, b""), msg.get(34, b""), sender, target, password))
        return True
    except (InvalidSignature, ValueError):
        return False


class CombinedLogon:
    """Several hooks' fields in one Logon (e.g. user/password plus a signature)."""

    def __init__(self, *hooks):
        self.hooks = [h for h in hooks if h is not None]

    def __call__(self, session) -> list:
        out = []
        for h in self.hooks:
            out += h(session) if callable(h) else list(h)
        return out


SIGNATURES = ("", "hmac-sha256", "ed25519")


def logon_hook(credentials_file: str = "", signature: str = "", key_file: str = ""):
    """The Logon hook of a gateway session from its config keys, or None when it logs on bare.
    Raises CredentialFileError (a one-line message naming the file, never the secret)."""
    if signature not in SIGNATURES:
        raise CredentialFileError(f"logon_signature {signature!r}: expected one of {', '.join(map(repr, SIGNATURES))}")
    if signature and not key_file:
        raise CredentialFileError(f"logon_signature {signature!r} needs signing_key_file")
    hooks = []
    password = None
    if credentials_file:
        creds = read_credentials(credentials_file)
        password = dict(creds).get(554)
        # a signed logon carries the password itself (after the signature): user name only here
        hooks.append([f for f in creds if not (signature and f[0] == 554)])
    if signature:
        signer = HmacRawDataLogon(key_file) if signature == "hmac-sha256" else Ed25519RawDataLogon(key_file)
        signer.password = password
        hooks.append(signer)
    return CombinedLogon(*hooks) if hooks else None
