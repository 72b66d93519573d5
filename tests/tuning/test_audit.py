"""tuning/audit.py and `appliance tuning check` against fixture hosts (tuned and untuned) and live."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.tuning.fakehost import ethtool_runner, make_host, make_topology, write, write_state
from tuning import audit
from tuning.coreplan import make_plan, read_topology

NIC = "ens1f0"
ACTORS = ["md.binance", "engine", "fix.cb", "recorder"]


def _host(root, tuned: bool, nic: str = NIC, sockets: int = 2, cores: int = 4):
    make_topology(root, sockets=sockets, cores=cores, threads=2, nic=nic, nic_node=1 if nic else -1)
    plan = make_plan(read_topology(root, nic), ACTORS).to_dict()
    catalog = audit.load_knobs()
    values = {**catalog["values"], "nic_name": nic}
    enabled = {k["id"]: k["default"] for k in catalog["knobs"]}
    make_host(root, plan, tuned, values, nic)
    # the appliance's own files as the playbook leaves them
    if tuned:
        write(root, "etc/appliance/appliance.toml", '[[venues]]\nname = "binance"\n')
        units = audit.expected_units(audit.Expected(catalog["knobs"], enabled, values, plan, ""))
        for u in units:
            write(root, f"etc/systemd/system/{'appliance.target' if u == 'appliance.target' else u}", "")
            wants = "multi-user.target.wants" if u == "appliance.target" else "appliance.target.wants"
            write(root, f"etc/systemd/system/{wants}/{u}", "")
    write_state(root, enabled, values, plan)
    return audit.expected_for(root)


def _by_id(checks):
    return {c.id: c for c in checks}


def test_tuned_host_passes_every_applicable_knob(tmp_path):
    e = _host(tmp_path, tuned=True)
    checks = audit.audit(tmp_path, e, run=ethtool_runner(True))
    bad = [c for c in checks if c.status == audit.FAIL]
    assert not bad, bad
    assert audit.ok(checks)
    assert {c.id for c in checks} == {k["id"] for k in audit.load_knobs()["knobs"]}
    na = {c.id for c in checks if c.status == audit.NA}
    assert na == {"T-1.11", "T-7.2"}, "only the knobs switched off by default are n/a here"


def test_untuned_host_fails_each_tuning_knob_with_the_actual_value(tmp_path):
    e = _host(tmp_path, tuned=False)
    checks = _by_id(audit.audit(tmp_path, e, run=ethtool_runner(False)))
    for kid in ("T-1.1", "T-1.2", "T-1.3", "T-1.4", "T-1.5", "T-1.8", "T-1.10", "T-2.1", "T-2.2", "T-3.1",
                "T-3.2", "T-3.3", "T-4.1", "T-4.2", "T-4.3", "T-4.4", "T-4.5", "T-5.1", "T-5.2", "T-5.3",
                "T-5.4", "T-5.5", "T-5.6", "T-5.7", "T-6.1", "T-6.2", "T-7.1", "T-7.3", "T-8.1", "T-8.2",
                "T-8.3"):
        assert checks[kid].status == audit.FAIL, checks[kid]
    assert checks["T-5.1"].actual == "vm.swappiness=60 vm.stat_interval=1"
    assert checks["T-3.1"].actual.startswith("cpu0: powersave")
    assert checks["T-5.7"].actual == "enabled=always defrag=madvise"
    assert "rx-usecs=50" in checks["T-6.1"].actual
    assert not audit.ok(list(checks.values()))


def test_knob_switched_off_in_the_state_file_is_not_applicable(tmp_path):
    e = _host(tmp_path, tuned=False)
    e.enabled["T-5.1"] = False
    c = _by_id(audit.audit(tmp_path, e, run=ethtool_runner(False)))["T-5.1"]
    assert c.status == audit.NA and "sysctl_vm" in c.actual


def test_host_without_cpufreq_reports_governor_and_epp_not_applicable(tmp_path):
    e = _host(tmp_path, tuned=True)
    for p in tmp_path.glob("sys/devices/system/cpu/cpu*/cpufreq"):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    checks = _by_id(audit.audit(tmp_path, e, run=ethtool_runner(True)))
    assert checks["T-3.1"].status == audit.NA and "no cpufreq" in checks["T-3.1"].actual
    assert checks["T-3.2"].status == audit.NA
    assert audit.ok(list(checks.values()))


def test_degraded_plan_marks_isolation_knobs_not_applicable(tmp_path):
    e = _host(tmp_path, tuned=False, nic="", sockets=1, cores=2)
    assert e.plan["degraded"]
    checks = _by_id(audit.audit(tmp_path, e))
    for kid in ("T-1.1", "T-1.2", "T-1.3", "T-1.4", "T-4.1", "T-4.2", "T-4.3"):
        assert checks[kid].status == audit.NA and "degraded" in checks[kid].actual
    for kid in ("T-4.4", "T-4.5", "T-6.1", "T-6.2"):
        assert checks[kid].status == audit.NA and "no NIC" in checks[kid].actual


def test_sysctl_missing_from_this_kernel_is_not_applicable_not_a_failure(tmp_path):
    e = _host(tmp_path, tuned=True)
    (tmp_path / "proc/sys/kernel/numa_balancing").unlink()
    c = _by_id(audit.audit(tmp_path, e, run=ethtool_runner(True)))["T-5.2"]
    assert c.status == audit.NA and "absent" in c.actual


def test_irq_left_on_an_isolated_core_fails_and_names_the_irq(tmp_path):
    e = _host(tmp_path, tuned=True)
    iso = e.plan["isolated"][0]
    write(tmp_path, "proc/irq/25/effective_affinity_list", str(iso))
    c = _by_id(audit.audit(tmp_path, e, run=ethtool_runner(True)))["T-4.3"]
    assert c.status == audit.FAIL and f"25->{iso}" in c.actual


def test_ethtool_missing_fails_nic_checks_with_a_clear_reason(tmp_path):
    e = _host(tmp_path, tuned=True)

    def no_ethtool(argv):
        raise FileNotFoundError("ethtool not installed")
    c = _by_id(audit.audit(tmp_path, e, run=no_ethtool))["T-6.1"]
    assert c.status == audit.FAIL and "ethtool not installed" in c.actual


def test_corrupt_state_file_raises_a_clear_error(tmp_path):
    write(tmp_path, "etc/appliance/tuning.json", "{not json")
    with pytest.raises(ValueError, match="not a valid tuning state file"):
        audit.expected_for(tmp_path)


def test_audit_writes_nothing_under_the_root(tmp_path):
    e = _host(tmp_path, tuned=False)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    audit.audit(tmp_path, e, run=ethtool_runner(False))
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "appliance.cli", "tuning", "check", *args],
                          capture_output=True, text=True)


def test_cli_check_json_and_exit_status_follow_the_checks(tmp_path):
    tuned, untuned = tmp_path / "tuned", tmp_path / "untuned"
    _host(tuned, tuned=True, nic="")
    _host(untuned, tuned=False, nic="")
    r = _cli("--root", str(tuned), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True
    assert set(out["checks"][0]) == {"id", "name", "expected", "actual", "status"}
    assert {c["status"] for c in out["checks"]} <= {"pass", "fail", "n/a"}
    r = _cli("--root", str(untuned), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    r = _cli("--root", str(untuned), "--only", "T-5")
    assert r.returncode == 1 and "T-5.1" in r.stdout and "T-1.1" not in r.stdout
    assert "host is NOT tuned" in r.stdout


def test_cli_check_on_the_live_host_reports_every_knob(tmp_path):
    r = _cli("--json")
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert [c["id"] for c in out["checks"]] == [k["id"] for k in audit.load_knobs()["knobs"]]
    assert out["ok"] == (r.returncode == 0)
    by_id = {c["id"]: c for c in out["checks"]}
    if not os.path.exists("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"):
        assert by_id["T-3.1"]["status"] == "n/a" and "no cpufreq" in by_id["T-3.1"]["actual"]
    assert by_id["T-7.3"]["status"] in ("pass", "fail")      # clocksource is always readable


def test_state_file_with_its_own_catalogue_needs_no_knobs_json(tmp_path, monkeypatch):
    """A deployed host audits from /etc/appliance/tuning.json alone (the playbook writes the catalogue in)."""
    _host(tmp_path, tuned=True, nic="")
    state = tmp_path / "etc/appliance/tuning.json"
    data = json.loads(state.read_text())
    catalog = audit.load_knobs()
    data.update(knobs=catalog["knobs"], units=catalog["units"])
    state.write_text(json.dumps(data))
    monkeypatch.setattr(audit, "KNOBS_PATH", tmp_path / "missing.json")
    e = audit.expected_for(tmp_path)
    assert audit.ok(audit.audit(tmp_path, e))
