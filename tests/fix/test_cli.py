"""``appliance fix ...`` command line: the acceptor as a real process; sub-command registration."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from appliance import cli
from tests.fix.defscript import DATA, Driver


@pytest.mark.timeout(60)
def test_acceptor_process_passes_a_script_and_exits_cleanly_on_sigterm(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "fix", "acceptor", "--port", "0",
                          "--store", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        drv = Driver(port)
        try:
            drv.run(DATA / "fix44" / "8_AdminAndApplicationMessages.def")
        finally:
            drv.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert (tmp_path / "FIX.4.4-ISLD-TW44" / "messages.log").stat().st_size > 0
    finally:
        p.kill()
        p.wait()


def test_fix_subcommands_are_registered_with_their_arguments():
    parser = cli.build_parser()
    a = parser.parse_args(["fix", "acceptor", "--port", "9878", "--host", "0.0.0.0", "--store", "/x"])
    assert (a.port, a.host, a.store) == (9878, "0.0.0.0", "/x") and callable(a.handler)
    assert parser.parse_args(["fix", "gateway", "--session", "venue1"]).session == "venue1"
    assert parser.parse_args(["fix", "exchange", "--port", "9879"]).port == 9879
    with pytest.raises(SystemExit):
        parser.parse_args(["fix", "acceptor"])          # --port is required
