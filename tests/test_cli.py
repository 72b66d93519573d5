"""Every command fails cleanly: bad input or environment gives one line on stderr and exit 2,
never a traceback or a hang."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from appliance import cli

GOOD = """
[[venues]]
name = "binance"
[[instruments]]
venue = "binance"
symbol = "NKNUSDT"
tick = "0.00000001"
lot = "0.00000001"
"""

BAD_CONFIGS = {
    "bad_toml": "[appliance\n",
    "md_capacity": "[rings]\nmd_capacity = 1000\n",
    "fix_list": "[fix]\nsessions = [1, 2, 3]\n",
    "fix_scalar": "fix = [1, 2, 3]\n",
    "max_loss_inf": GOOD + "[risk]\nmax_loss = inf\n",
    "huge_int": "[rings]\nmd_capacity = 9223372036854775807\n",
    "huge_risk_int": GOOD + "[risk.limits]\nmax_qty = 9223372036854775807\n",
    "unknown_section": "[bogus]\nx = 1\n",
    "strategy_unknown_symbol": GOOD + "[[strategies]]\nkind = 'avellaneda_stoikov'\n"
                               "venue = 'binance'\nsymbol = 'NOPE'\n",
}
COMMANDS = [["status"], ["engine"], ["kill"], ["fix", "gateway", "--session", "x"],
            ["fix", "exchange", "--port", "0"], ["recorder"], ["md", "--venue", "binance"],
            ["tuning", "plan"]]


def _run(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def _clean(r):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and " INFO " not in ln
             and " WARNING " not in ln]
    if ": error: " not in lines[-1]:              # argparse: usage lines, then the error line
        assert len(lines) == 1, r.stderr
    return lines[-1]


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_bad_config_is_one_line_and_exit_2_for_every_command(tmp_path, name, cmd):
    p = tmp_path / "a.toml"
    p.write_text(BAD_CONFIGS[name])
    line = _clean(_run(["--config", str(p), *cmd]))
    assert str(p) in line or "appliance" in line


@pytest.mark.parametrize("path", ["/nonexistent/a.toml", "/tmp"])
def test_missing_or_directory_config_path(path):
    line = _clean(_run(["--config", path, "status"]))
    assert "cannot read config" in line


@pytest.mark.parametrize("args, match", [
    (["fix", "exchange", "--port", "99999"], "99999 is not a TCP port"),
    (["venue-sim", "--venue", "binance", "--port", "-1"], "not a TCP port"),
    (["demo", "--rate", "0"], "must be a finite number > 0"),
    (["demo", "--records", "-1"], "must be >= 1"),
    (["fix", "exchange", "--port", "0", "--ref", "NOEQUALS"], "expected SYMBOL=PRICE"),
    (["kill", "--timeout", "nan"], "must be a finite number > 0"),
])
def test_bad_arguments(args, match):
    assert match in _clean(_run(args))


def test_busy_port_is_one_line(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        line = _clean(_run(["fix", "exchange", "--port", str(s.getsockname()[1])],
                           env={"APPLIANCE_SHM_DIR": str(tmp_path / "shm")}))
        assert "cannot listen" in line or "in use" in line.lower()
    finally:
        s.close()


def test_unwritable_shm_dir_is_one_line(tmp_path):
    line = _clean(_run(["kill"], env={"APPLIANCE_SHM_DIR": "/proc/appliance-cannot-be-here"}))
    assert "/proc/appliance-cannot-be-here" in line


def test_operator_errors_are_ours_or_os_errors_and_bugs_are_not():
    from appliance.config import ConfigError
    assert cli.is_operator_error(ConfigError("x")) and cli.is_operator_error(PermissionError("x"))
    assert not cli.is_operator_error(KeyError("x")) and not cli.is_operator_error(TypeError("x"))


def test_the_command_leaves_without_the_teardown_but_flushes_what_was_written(tmp_path):
    """``appliance`` (cli.run) exits with os._exit after main() to skip the interpreter's
    teardown: a file some code left open still gets its buffered bytes, and stdout its lines."""
    out = tmp_path / "left-open.txt"
    code = ("import sys\nimport appliance.cli as c\n"
            f"f = open({str(out)!r}, 'w')\n"
            "f.write('buffered, never closed')\n"
            "print('on stdout')\n"
            "c.main = lambda: 3\n"
            "c.run()\n"
            "print('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert r.stdout == "on stdout\n"
    assert out.read_text() == "buffered, never closed"
