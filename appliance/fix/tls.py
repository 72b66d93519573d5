"""FIX over TLS: settings in the QuickFIX SSL vocabulary, contexts for initiator and acceptor.

A session turns TLS on with a ``tls`` table (``[fix.sessions.NAME.tls]`` for the gateway, the
``tls=`` argument of ``EventLoop.listen`` / ``add_initiator`` for the session layer). Keys are the
QuickFIX SSL setting names:

    CertificationAuthoritiesFile   PEM bundle of CAs that sign the peer (default: the system's)
    CertificationAuthoritiesDirectory   hashed CA directory (c_rehash), as OpenSSL reads it
    CertificateVerifyLevel         as QuickFIX: 0 = do not verify the peer; 1 = verify, and an
                                   acceptor requires a client certificate; 2 = verify if given
                                   (an acceptor asks for one, optional). Not set: an initiator
                                   verifies the server; an acceptor does not ask for a client
                                   certificate
    ClientCertificateFile / ClientCertificateKeyFile   initiator's own certificate (optional)
    ServerCertificateFile / ServerCertificateKeyFile   acceptor's certificate (required there)
    SSLProtocol                    QuickFIX form, e.g. "-all +TLSv1_2 +TLSv1_3" (TLSv1.2 spelling
                                   accepted too); only TLS 1.2 and 1.3 can be enabled (default:
                                   both)
    SSLCipherSuite                 OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)
    SSLServerName                  SNI and the name checked in the server's certificate
                                   (initiator; default: the host it connects to)

Verification is on unless CertificateVerifyLevel = 0 says otherwise; the initiator checks the
server's name. Private key files must be readable by their owner only (0600), like every other
secret of the appliance.

Kernel TLS: with ``SSL_OP_ENABLE_KTLS`` and the kernel's ``tls`` module, OpenSSL hands the
record layer to the kernel after the handshake and a ``send`` on the socket is a plain
``send(2)``. ``ktls_available()`` reports whether this host offers it (``/proc/net/tls_stat``,
which the module creates, and an ssl module that exposes the option). Without it the gateway
writes through ``SSLSocket.send`` (OpenSSL encrypts in user space, one ``write(2)`` per record).
"""
from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

KEYS = ("CertificationAuthoritiesFile", "CertificationAuthoritiesDirectory", "CertificateVerifyLevel",
        "ClientCertificateFile", "ClientCertificateKeyFile", "ServerCertificateFile",
        "ServerCertificateKeyFile", "SSLProtocol", "SSLCipherSuite", "SSLServerName")
_PROTOCOLS = {"tlsv1_2": ssl.TLSVersion.TLSv1_2, "tlsv1_3": ssl.TLSVersion.TLSv1_3}
_REFUSED = ("sslv2", "sslv3", "tlsv1", "tlsv1_1")


def ktls_available() -> bool:
    """True when both the kernel (tls module loaded) and Python's ssl (OP_ENABLE_KTLS) offer
    kernel TLS offload."""
    return os.path.exists("/proc/net/tls_stat") and hasattr(ssl, "OP_ENABLE_KTLS")


def _versions(spec: str) -> tuple:
    """QuickFIX SSLProtocol ("-all +TLSv1_2 ...", or a plain list; case-insensitive, TLSv1.2
    spelling too) -> (min, max) TLS versions."""
    on = set()
    for tok in spec.replace(",", " ").split():
        sign = tok[0] if tok[0] in "+-" else "+"
        raw = tok.lstrip("+-")
        name = raw.lower().replace(".", "_")
        if name == "all":
            on = set(_PROTOCOLS) if sign == "+" else set()
            continue
        if name in _REFUSED:
            if sign == "+":
                raise ValueError(f"SSLProtocol: {raw} is not allowed (TLS 1.2 or later only)")
            continue
        if name not in _PROTOCOLS:
            raise ValueError(f"SSLProtocol: unknown protocol {raw!r} (known: TLSv1_2, TLSv1_3)")
        (on.add if sign == "+" else on.discard)(name)
    if not on:
        raise ValueError(f"SSLProtocol {spec!r} enables no protocol")
    vs = sorted(_PROTOCOLS[n] for n in on)
    return vs[0], vs[-1]


def _private_key_file(path: str, key: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ValueError(f"{key} {p}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{key} {p} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600")
    return str(p)


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str = ""
    ca_dir: str = ""
    verify_level: int = -1            # -1 = the role's default
    client_cert: str = ""
    client_key: str = ""
    server_cert: str = ""
    server_key: str = ""
    protocol: str = "+TLSv1_2 +TLSv1_3"
    ciphers: str = ""
    server_name: str = ""

    @classmethod
    def from_table(cls, t: dict) -> "TlsSettings":
        """From a table keyed by the QuickFIX names (unknown keys refused, naming the key)."""
        for k in t:
            if k not in KEYS:
                raise ValueError(f"{k}: unknown TLS setting (known: {', '.join(KEYS)})")
        lvl = t.get("CertificateVerifyLevel", -1)
        if isinstance(lvl, bool) or not isinstance(lvl, int) or lvl not in (-1, 0, 1, 2):
            raise ValueError(f"CertificateVerifyLevel: expected 0, 1 or 2, got {lvl!r}")
        for k in KEYS:
            if k != "CertificateVerifyLevel" and k in t and not isinstance(t[k], str):
                raise ValueError(f"{k}: expected a string, got {t[k]!r}")
        s = cls(ca_file=t.get("CertificationAuthoritiesFile", ""),
                ca_dir=t.get("CertificationAuthoritiesDirectory", ""), verify_level=lvl,
                client_cert=t.get("ClientCertificateFile", ""), client_key=t.get("ClientCertificateKeyFile", ""),
                server_cert=t.get("ServerCertificateFile", ""), server_key=t.get("ServerCertificateKeyFile", ""),
                protocol=t.get("SSLProtocol", cls.protocol), ciphers=t.get("SSLCipherSuite", ""),
                server_name=t.get("SSLServerName", ""))
        _versions(s.protocol)
        if bool(s.client_cert) != bool(s.client_key):
            raise ValueError("ClientCertificateFile and ClientCertificateKeyFile go together")
        return s

    def _common(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        ctx.minimum_version, ctx.maximum_version = _versions(self.protocol)
        if self.ciphers:
            try:
                ctx.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise ValueError(f"SSLCipherSuite {self.ciphers!r}: no cipher can be selected") from None
        if hasattr(ssl, "OP_ENABLE_KTLS"):
            ctx.options |= ssl.OP_ENABLE_KTLS
        return ctx

    def _load_cas(self, ctx: ssl.SSLContext) -> None:
        if self.ca_file or self.ca_dir:
            try:
                ctx.load_verify_locations(cafile=self.ca_file or None, capath=self.ca_dir or None)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"CertificationAuthoritiesFile/Directory: {e}") from None
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH if ctx.check_hostname else ssl.Purpose.CLIENT_AUTH)

    def client_context(self) -> ssl.SSLContext:
        """Initiator side: verifies the server (and its name) unless CertificateVerifyLevel=0."""
        ctx = self._common(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        if self.verify_level == 0:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            self._load_cas(ctx)
        if self.client_cert:
            try:
                ctx.load_cert_chain(self.client_cert, _private_key_file(self.client_key, "ClientCertificateKeyFile"))
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"ClientCertificateFile/KeyFile: {e}") from None
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """Acceptor side: its certificate; client certificates required (1) or asked for (2)."""
        if not (self.server_cert and self.server_key):
            raise ValueError("an acceptor needs ServerCertificateFile and ServerCertificateKeyFile")
        ctx = self._common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        try:
            ctx.load_cert_chain(self.server_cert, _private_key_file(self.server_key, "ServerCertificateKeyFile"))
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"ServerCertificateFile/KeyFile: {e}") from None
        if self.verify_level in (1, 2):
            ctx.verify_mode = ssl.CERT_REQUIRED if self.verify_level == 1 else ssl.CERT_OPTIONAL
            self._load_cas(ctx)
        return ctx


def make_pki(directory, names=("localhost",), client: bool = True) -> dict:
    """A private CA and certificates signed by it, for loopback sims, benches and tests: files
    ``ca.pem``, ``server.pem`` / ``server.key`` (for ``names`` and 127.0.0.1) and, with
    ``client``, ``client.pem`` / ``client.key``; keys 0600. Returns the paths by those names."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from appliance.fix.store import open_private, private_dir
    d = private_dir(directory)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path, key):
        fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("appliance test CA")).issuer_name(name("appliance test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": str(d / "ca.pem")}
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(stem, cn, usage, sans):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(d / f"{stem}.key", key)
        out[stem] = str(d / f"{stem}.pem")
        out[f"{stem}_key"] = str(d / f"{stem}.key")

    leaf("server", names[0], ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    if client:
        leaf("client", "appliance client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return out
