"""systemd/appliance-exporter.service: verifies clean with systemd-analyze, runs the CLI's
exporter as the appliance user, and is hardened like the actor units but read-only and without
capabilities."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.systemd.test_units import UNITS, _system_units_dir, parse

UNIT = "appliance-exporter.service"


def test_exporter_unit_runs_the_cli_as_the_appliance_user_and_restarts_with_limits():
    u = parse(UNITS / UNIT)
    s = u["Service"]
    assert s["ExecStart"] == ["/opt/appliance/venv/bin/appliance exporter"]
    assert s["User"] == ["appliance"] and s["Group"] == ["appliance"]
    assert s["Environment"][0] == "APPLIANCE_CONFIG=/etc/appliance/appliance.toml"
    assert s["Restart"] == ["on-failure"]
    assert int(u["Unit"]["StartLimitBurst"][0]) > 0 and int(u["Unit"]["StartLimitIntervalSec"][0]) > 0
    assert u["Unit"]["PartOf"] == ["appliance.target"]
    assert u["Install"]["WantedBy"] == ["appliance.target"]
    assert s["StandardOutput"] == ["journal"]


def test_exporter_unit_is_hardened_read_only_and_has_no_capabilities():
    s = parse(UNITS / UNIT)["Service"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictSUIDSGID",
                "LockPersonality", "RestrictNamespaces"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    ro = s["ReadOnlyPaths"][0].split()
    assert "/dev/shm" in ro and "/var/lib/appliance" in ro
    # only the numba cache is writable (compiled readers load from it)
    assert s["ReadWritePaths"] == ["/var/lib/appliance/numba-cache"]
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert "LimitMEMLOCK" not in s


def test_exporter_unit_verifies_clean(tmp_path):
    if shutil.which("systemd-analyze") is None or _system_units_dir() is None:
        pytest.skip("systemd-analyze / systemd units not installed (apt-get install systemd)")
    root = tmp_path / "root"
    shutil.copytree(_system_units_dir(), root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for u in (UNIT, "appliance.target", "appliance-engine.service", "appliance-cstate.service",
              "appliance-recorder.service", "var-lib-appliance-hugepages.mount"):
        shutil.copy(UNITS / u, etc / u)
    for exe in ("opt/appliance/venv/bin/appliance", "usr/local/sbin/appliance-cstate-hold"):
        p = root / exe
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT], cwd=etc,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # the check can fail: a misspelt key is reported
    (etc / UNIT).write_text((UNITS / UNIT).read_text().replace("ProtectHome=", "ProtectHom="))
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT], cwd=etc,
                       capture_output=True, text=True, timeout=60)
    assert "ProtectHom" in r.stderr
