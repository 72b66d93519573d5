"""The whole playbook converged against a disposable real Debian root filesystem (debootstrap +
Ansible's chroot connection), then run again (zero changes) and in check mode (zero changes);
then the result: the rendered config loads in the appliance, every rendered unit passes
`systemd-analyze verify`, the audit reads the image.

Slow (three playbook runs; the root filesystem is the session's debootstrap tree of
tests/provision/guest.py, seen through an overlay so it stays clean for the other tests). Needs
root, debootstrap and a Debian mirror (the one in /etc/apt/sources*)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.provision import guest
from tests.provision.ansible_run import changed_tasks, playbook, snapshot_repo
from tests.tuning.fakehost import make_topology

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# the image's trading setup: two venues, their instruments in the registry, one FIX session
INSTRUMENTS = [{"venue": "binance", "symbol": "BTCUSDT", "tick": "0.01", "lot": "0.00001"},
               {"venue": "kraken", "symbol": "XBT/USD", "tick": "0.1", "lot": "0.00000001"},
               {"venue": "kraken", "symbol": "ETH/USD", "tick": "0.01", "lot": "0.00000001"}]
SESSION = {"name": "kraken", "venue": "kraken", "host": "127.0.0.1", "port": 4198,
           "sender_comp_id": "APPLIANCE", "target_comp_id": "KRAKEN",
           "credentials_file": "/etc/appliance/secrets/kraken.toml"}
RISK = {"max_loss": 100.0, "limits": {"max_qty": 100000000, "max_notional": 100.0, "max_position": 1000000000,
                                      "max_open_orders": 8, "collar_bps": 500},
        "venues": {"kraken": {"rate_per_s": 10, "burst": 20, "check_balance": False}}}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("building a root filesystem and chrooting into it needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap not installed (apt-get install -y debootstrap)")
    if shutil.which("ansible-playbook") is None:
        pytest.skip("ansible-playbook not installed")
    # the session's debootstrap tree (tests/provision/guest.py), written through an overlay
    tree = guest.session_tree(tmp_path_factory)
    wheels = guest.session_wheelhouse(tmp_path_factory)
    base = tmp_path_factory.mktemp("image")
    with guest.overlay(tree, base / "upper", base / "work", base / "root") as root:
        yield from _image(base, root, wheels)
    shutil.rmtree(base, ignore_errors=True)


def _image(base: Path, root: Path, wheels: Path):
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    # the pinned wheels, where the image's pip finds them (--no-index: the same bytes every run)
    shutil.copytree(wheels, root / "wheelhouse", dirs_exist_ok=True)
    # the image is built for a known hardware model: a 2-socket, 4-core, SMT-2 topology
    make_topology(root / "root/topology", sockets=2, cores=4, threads=2)
    repo = snapshot_repo(base / "repo")
    (base / "inventory.yml").write_text(yaml.safe_dump({"all": {"children": {"trading": {"hosts": {
        str(root): {
            "ansible_connection": "community.general.chroot",
            "coreplan_topology_root": "/root/topology",
            "appliance_requirements": guest.requirements(),
            "appliance_pip_env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"},
            # `appliance compile` in the image is minutes of CPU; tests/systemd/test_appliance_target runs it
            "appliance_compile": False,
            "appliance_pack_dir": str(base / "pack"),
            "appliance_venues": [
                {"name": "binance", "ws_url": "ws://127.0.0.1:9001/binance"},
                {"name": "kraken", "ws_url": "ws://127.0.0.1:9001/kraken"},
            ],
            "appliance_instruments": INSTRUMENTS,
            "appliance_fix_sessions": [SESSION],
            "appliance_risk": RISK,
        }}}}}}))
    yield {"root": root, "repo": repo, "inventory": base / "inventory.yml"}


def _run(image, *extra):
    return playbook(["-i", str(image["inventory"]), "site.yml", *extra], cwd=image["repo"] / "provision",
                    timeout=1500)


@pytest.fixture(scope="module")
def converged(image):
    r, recap = _run(image)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-3000:]
    host = recap[str(image["root"])]
    assert host["failed"] == 0 and host["changed"] > 0
    return {**image, "stdout": r.stdout}


def test_first_run_reports_what_an_image_defers_to_boot(converged):
    out = converged["stdout"]
    assert "image target: kernel parameters written" in out
    assert "hugetlbfs not mounted now (image target)" in out
    assert "DEGRADED" not in out


def test_second_run_changes_nothing(converged):
    r, recap = _run(converged)
    assert r.returncode == 0, r.stdout[-6000:]
    assert recap[str(converged["root"])]["changed"] == 0, changed_tasks(r.stdout)


def test_check_mode_on_the_converged_image_changes_nothing(converged):
    r, recap = _run(converged, "--check")
    assert r.returncode == 0, r.stdout[-6000:]
    assert recap[str(converged["root"])]["changed"] == 0, changed_tasks(r.stdout)


def test_rendered_config_loads_in_the_appliance_with_the_core_plan(converged):
    from appliance import config
    root = converged["root"]
    cfg = config.load(root / "etc/appliance/appliance.toml")
    state = json.loads((root / "etc/appliance/tuning.json").read_text())
    assert dict(cfg.cores.actors) == state["plan"]["actors"]
    assert set(cfg.cores.actors) == {"md.binance", "md.kraken", "engine", "fix.kraken", "recorder"}
    assert [v.name for v in cfg.venues] == ["binance", "kraken"]
    assert [(i.venue, i.symbol, i.id, i.tick, i.lot) for i in cfg.instruments] == \
        [(i["venue"], i["symbol"], n, i["tick"], i["lot"]) for i, n in zip(INSTRUMENTS, (0, 0, 1))]
    assert cfg.extra["risk"] == RISK
    # [fix.sessions.<name>], the table `appliance fix gateway --session <name>` reads, trading
    # the instruments of its venue
    assert cfg.extra["fix"]["sessions"] == {"kraken": {k: v for k, v in SESSION.items() if k != "name"}}
    from appliance.fix.gateway import load_session_config
    assert [s for s, _, _ in load_session_config(cfg, "kraken").instruments] == ["XBT/USD", "ETH/USD"]
    assert cfg.appliance.shm_dir == "/var/lib/appliance/hugepages"
    # and inside the image, by the image's own virtualenv
    r = subprocess.run(["chroot", str(root), "/opt/appliance/venv/bin/python", "-c",
                        "from appliance import config; c = config.load('/etc/appliance/appliance.toml'); "
                        "print(sorted(c.cores.actors), [i.key for i in c.instruments])"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "engine" in r.stdout and "kraken:XBT/USD" in r.stdout


def test_every_rendered_unit_verifies_inside_the_image(converged):
    root = converged["root"]
    etc = root / "etc/systemd/system"
    units = ["appliance.target", "appliance-cstate.service", "var-lib-appliance-hugepages.mount",
             "appliance-engine.service", "appliance-recorder.service", "appliance-md@binance.service",
             "appliance-md@kraken.service", "appliance-fix@kraken.service", "appliance-exporter.service"]
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], cwd=etc,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    wants = {p.name for p in (etc / "appliance.target.wants").iterdir()}
    assert {"appliance-md@binance.service", "appliance-md@kraken.service", "appliance-fix@kraken.service",
            "appliance-engine.service", "appliance-recorder.service", "appliance-exporter.service"} <= wants
    state = json.loads((root / "etc/appliance/tuning.json").read_text())
    engine_cpu = state["plan"]["actors"]["engine"]
    assert f"CPUAffinity={engine_cpu}" in (etc / "appliance-engine.service.d/50-cores.conf").read_text()
    # the exporter is no actor: it runs on the housekeeping CPUs
    assert f"CPUAffinity={state['plan']['housekeeping_list']}\n" in \
        (etc / "appliance-exporter.service.d/50-cores.conf").read_text()


def test_boot_configuration_carries_the_plan(converged):
    root = converged["root"]
    plan = json.loads((root / "etc/appliance/tuning.json").read_text())["plan"]
    assert not plan["degraded"] and plan["isolated"]
    grub = (root / "etc/default/grub.d/99-appliance.cfg").read_text()
    assert f"isolcpus=managed_irq,domain,{plan['isolated_list']}" in grub
    assert f"irqaffinity={plan['housekeeping_list']}" in grub
    assert "hugepagesz=1G hugepages=2" in grub and "mitigations=off" not in grub
    sysctl = (root / "etc/sysctl.d/60-appliance.conf").read_text()
    assert re.search(r"^vm\.swappiness\s*=\s*10$", sysctl, re.M)
    assert "w- /sys/kernel/mm/transparent_hugepage/enabled - - - - never" in \
        (root / "etc/tmpfiles.d/appliance-housekeeping.conf").read_text()
    assert "appliance:" in (root / "etc/passwd").read_text()


def test_audit_reads_the_image_and_passes_the_appliance_knobs(converged):
    from tuning import audit
    root = converged["root"]
    checks = {c.id: c for c in audit.audit(root)}
    for kid in ("T-8.1", "T-8.2", "T-8.3"):
        assert checks[kid].status == "pass", checks[kid]
    # runtime knobs cannot be seen in an image that is not running: n/a, never a crash
    assert checks["T-5.1"].status == "n/a"
