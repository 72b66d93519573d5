"""The reference FIX 4.4 session acceptance suite against our acceptor (one case per script)."""
from __future__ import annotations

import time

import pytest

from appliance.fix.acceptor import AcceptorThread
from tests.fix.defscript import DATA, Driver

SCRIPTS = sorted((DATA / "fix44").glob("*.def"))


@pytest.fixture(scope="module")
def acceptor(tmp_path_factory):
    acc = AcceptorThread(store_dir=tmp_path_factory.mktemp("acceptance-store")).start()
    yield acc
    acc.stop()


def _wait_idle(acc, timeout=5.0):
    deadline = time.monotonic() + timeout
    while acc.loop.bound and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not acc.loop.bound, "acceptor still holds a connection from the previous script"


def test_suite_has_every_fix44_script():
    assert len(SCRIPTS) == 47


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_fix44_acceptance_script_passes(acceptor, script):
    _wait_idle(acceptor)
    drv = Driver(acceptor.port)
    try:
        drv.run(script)
    finally:
        drv.close()
        _wait_idle(acceptor)
