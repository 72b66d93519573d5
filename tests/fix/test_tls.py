"""FIX over TLS on loopback with a CA made by the test: session layer initiator and acceptor, the
order gateway against a TLS acceptor, and the ways verification must fail."""
from __future__ import annotations

import os
import ssl
import threading
import time

import numpy as np
import pytest

from appliance.fix import dictionary
from appliance.fix import gateway as G
from appliance.fix import tls
from appliance.fix.session import Session, SessionConfig
from appliance.fix.store import FileStore, MemoryStore
from appliance.fix.transport import EventLoop
from appliance.sim import exchange as X
from appliance.transport import records as R
from appliance.transport import ring, wait
from tests.fix.helpers import pump_until
from tests.fix.peer_proc import ExecApp, ReportSink, acceptor_config, initiator_config, order_body
from tests.fix.test_gateway import INSTRUMENTS

pytestmark = pytest.mark.timeout(120)
DD = dictionary.for_version("FIX.4.4")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls.make_pki(tmp_path_factory.mktemp("pki"), names=("venue.test", "localhost"))


def _server_ctx(pki, verify=1):
    return tls.TlsSettings.from_table({"ServerCertificateFile": pki["server"],
                                       "ServerCertificateKeyFile": pki["server_key"],
                                       "CertificationAuthoritiesFile": pki["ca"],
                                       "CertificateVerifyLevel": verify}).server_context()


def _client_table(pki, **kw):
    t = {"CertificationAuthoritiesFile": pki["ca"], "ClientCertificateFile": pki["client"],
         "ClientCertificateKeyFile": pki["client_key"], "SSLServerName": "venue.test"}
    t.update(kw)
    return {k: v for k, v in t.items() if v is not None}


def test_session_initiator_and_acceptor_log_on_and_trade_over_tls_with_client_certificates(pki):
    loop = EventLoop(tick=0.02)
    acc = Session(acceptor_config(), MemoryStore(), ExecApp(), DD, now=time.time())
    loop.add_acceptor_session(acc)
    port = loop.listen("127.0.0.1", 0, tls=_server_ctx(pki))
    sink = ReportSink()
    got = []
    sink.on_app_message = lambda s, m: got.append(m.get(11))
    ini = Session(initiator_config(), MemoryStore(), sink, DD, now=time.time())
    loop.add_initiator(ini, "127.0.0.1", port, 0.2,
                       tls=tls.TlsSettings.from_table(_client_table(pki)).client_context(),
                       server_hostname="venue.test")
    try:
        assert pump_until([loop], lambda: ini.logged_on and acc.logged_on)
        for k in range(5):
            ini.send_app(b"D", order_body(f"T{k}", time.time()))
        loop.flush_session(ini)
        assert pump_until([loop], lambda: len(got) == 5)
        assert got == [b"T%d" % k for k in range(5)]
        for conn in (loop.connection_of(ini), loop.connection_of(acc)):
            assert isinstance(conn.sock, ssl.SSLSocket) and conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert loop.connection_of(acc).sock.getpeercert()["subject"][0][0][1] == "appliance client"
    finally:
        loop.close()


class TlsVenue:
    """The mock exchange's application behind a TLS listener, on a thread."""

    def __init__(self, pki, verify=1):
        self.loop = EventLoop(tick=0.01)
        self.venue = X.MatchingVenue(references={"BTCUSDT": "100.00"})
        self.session = Session(SessionConfig(begin_string="FIX.4.4", sender_comp_id="SIMEX",
                                             target_comp_id="APPLIANCE"), MemoryStore(),
                               X.ExchangeApplication(self.venue), DD, now=time.time())
        self.loop.add_acceptor_session(self.session)
        self.port = self.loop.listen("127.0.0.1", 0, tls=_server_ctx(pki, verify))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop.is_set,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.loop.close()


def _gateway(shm_dir, tmp_path, port, tls_table):
    gcfg = G.GatewayConfig.from_table("t", {
        "host": "127.0.0.1", "port": port, "sender_comp_id": "APPLIANCE", "target_comp_id": "SIMEX",
        "instruments": INSTRUMENTS, "store_dir": str(tmp_path / "store"), "reconnect_min_ms": 20,
        "reconnect_max_ms": 100, "tls": tls_table})
    G.warm(gcfg)
    orders = ring.RingWriter.create("orders", R.ORDER_RECORD_SIZE, 1024, shm_dir)
    reader = ring.RingReader.attach("orders", "fix.t", "latest", shm_dir)
    execs_w = ring.RingWriter.create("exec.t", R.EXEC_RECORD_SIZE, 4096, shm_dir)
    execs = ring.RingReader.attach("exec.t", "engine", "oldest", shm_dir)
    store = FileStore(gcfg.store_dir)
    gw = G.Gateway(gcfg, reader, execs_w, store, wait_params=wait.make("backoff", spin_iterations=100,
                                                                       backoff_min_ns=20_000,
                                                                       backoff_max_ns=200_000))
    return gw, orders, execs, store


def _run_for(gw, seconds, until=None):
    end = time.time() + seconds
    while time.time() < end:
        gw.step()
        if until is not None and until():
            return True
    return False


def test_gateway_trades_over_tls_with_verification_sni_and_a_client_certificate(shm_dir, tmp_path, pki):
    venue = TlsVenue(pki)
    gw, orders, execs, store = _gateway(shm_dir, tmp_path, venue.port, _client_table(pki))
    try:
        assert _run_for(gw, 60, lambda: gw.gst[G.G_READY] == 1)
        assert isinstance(gw.sock, ssl.SSLSocket) and gw.sock.version() in ("TLSv1.2", "TLSv1.3")
        o = np.zeros(1, R.NEW_ORDER)
        o[0]["rtype"], o[0]["clord_id"], o[0]["price"], o[0]["qty"] = R.RT_NEW_ORDER, 42, 10_100, 3
        o[0]["side"], o[0]["ord_type"], o[0]["tif"] = R.SIDE_BUY, R.ORD_LIMIT, R.TIF_GTC
        orders.publish(o)
        rec = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)
        kinds = []

        def filled():
            while execs.poll(rec):
                kinds.append(int(rec[8]))
            return R.RT_FILL in kinds
        assert _run_for(gw, 60, filled)
        assert kinds.count(R.RT_ACK) == 1 and venue.venue.counts["fills"] == 1
    finally:
        gw.close()
        store.close()
        venue.close()


@pytest.mark.parametrize("case", ["system_cas_only", "wrong_server_name", "no_client_certificate"])
def test_gateway_refuses_or_is_refused_when_verification_fails(shm_dir, tmp_path, pki, case, caplog):
    venue = TlsVenue(pki)
    table = {"system_cas_only": _client_table(pki, CertificationAuthoritiesFile=None),
             "wrong_server_name": _client_table(pki, SSLServerName="other.test"),
             "no_client_certificate": _client_table(pki, ClientCertificateFile=None,
                                                    ClientCertificateKeyFile=None)}[case]
    gw, orders, execs, store = _gateway(shm_dir, tmp_path, venue.port, table)
    try:
        assert not _run_for(gw, 3, lambda: gw.session.logged_on)
        assert not venue.session.logged_on and venue.session.store.next_target == 1
        assert "TLS handshake" in caplog.text or "disconnected" in caplog.text
    finally:
        gw.close()
        store.close()
        venue.close()


def test_tls_settings_refuse_old_protocols_unknown_keys_and_readable_keys(pki, tmp_path):
    assert tls.TlsSettings.from_table({"SSLProtocol": "-all +tlsv1.2"}).client_context().maximum_version \
        == ssl.TLSVersion.TLSv1_2
    for bad, msg in (({"SSLProtocol": "+TLSv1_1"}, "not allowed"), ({"SSLProtocol": "-all"}, "enables no"),
                     ({"SSLVerify": 1}, "unknown TLS setting"), ({"CertificateVerifyLevel": 5}, "0, 1 or 2"),
                     ({"ClientCertificateFile": "x"}, "go together")):
        with pytest.raises(ValueError, match=msg):
            tls.TlsSettings.from_table(bad)
    s = tls.TlsSettings.from_table({"SSLProtocol": "-all +TLSv1_3"})
    ctx = s.client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    loose = tmp_path / "loose.key"
    loose.write_bytes(open(pki["client_key"], "rb").read())
    os.chmod(loose, 0o644)
    with pytest.raises(ValueError, match="0600"):
        tls.TlsSettings.from_table(_client_table(pki, ClientCertificateKeyFile=str(loose))).client_context()
    from appliance.config import ConfigError
    with pytest.raises(ConfigError, match="tls: SSLProtocol"):
        G.GatewayConfig.from_table("x", {"host": "h", "port": 1, "sender_comp_id": "A", "target_comp_id": "B",
                                         "instruments": INSTRUMENTS, "tls": {"SSLProtocol": "+SSLv3"}})
