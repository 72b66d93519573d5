"""The example inventory's fleet layout converges real hosts in one run: two systemd-nspawn
containers take the places of ld4-trade-01 and ty3-trade-01 (groups trading_ld4 and trading_ty3
under trading, the example's group_vars and host_vars unchanged except for what a container
cannot have), each described by its own hardware topology, so each gets its own core plan.

Slow (debootstrap once per session, two containers, two playbook runs).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.provision import guest
from tests.provision.ansible_run import PROVISION, changed_tasks, playbook, snapshot_repo
from tests.tuning.fakehost import make_topology
from tuning import coreplan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# the hardware each colo's hosts are built on (a captured /sys topology in the container)
HARDWARE = {"ld4-trade-01.example.net": {"sockets": 2, "cores": 4, "threads": 2},
            "ty3-trade-01.example.net": {"sockets": 1, "cores": 8, "threads": 1}}
# what a container cannot have: its own kernel knobs, huge pages, IRQs, a PTP clock, a trading NIC
CONTAINER = {"coreplan_topology_root": "/root/topology", "nic_name": "", "timesync_ptp": False,
             "hugepages_reserve_2m": False, "hugepages_mount": False, "irq_enabled": False,
             "sysctl_enabled": False,
             # `appliance compile` is minutes of CPU per host; tests/systemd/test_appliance_target
             # runs it, here the fleet's layout is what is tested
             "appliance_compile": False}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    missing = guest.missing_tools("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen", "ansible-playbook")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    tree = guest.session_tree(tmp_path_factory)
    work = tmp_path_factory.mktemp("fleet")
    key = guest.ssh_key(work)
    wheels = guest.session_wheelhouse(tmp_path_factory)
    hosts = {}
    try:
        for name, hw in HARDWARE.items():
            ctr = guest.Container(work / name, tree, key, name.split(".")[0], binds={wheels: "/wheelhouse"})
            hosts[name] = ctr
            ctr.start()
            make_topology(ctr.root / "root/topology", **hw)
        yield {"work": work, "hosts": hosts}
    finally:
        for ctr in hosts.values():
            ctr.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def converged(fleet):
    work = fleet["work"]
    repo = snapshot_repo(work / "repo")
    inv = work / "inventory"
    shutil.copytree(PROVISION / "inventory/example", inv)
    layout = yaml.safe_load((inv / "hosts.yml").read_text())
    for name, ctr in fleet["hosts"].items():
        path = inv / "host_vars" / f"{name}.yml"
        hv = yaml.safe_load(path.read_text())
        hv.update(ctr.ssh.inventory_vars(), **CONTAINER,
                  appliance_pack_dir=str(work / "pack"),
                  appliance_requirements=guest.requirements(),
                  appliance_pip_env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"})
        path.write_text(yaml.safe_dump(hv))
    limit = ",".join(fleet["hosts"])
    args = ["-i", str(inv / "hosts.yml"), "site.yml", "--limit", limit]
    first, first_recap = playbook(args, cwd=repo / "provision", timeout=1500)
    second, second_recap = playbook(args, cwd=repo / "provision", timeout=1500)
    return {"layout": layout, "first": first, "first_recap": first_recap, "second": second,
            "second_recap": second_recap}


def _read(fleet, name: str, rel: str) -> str:
    return (fleet["hosts"][name].root / rel).read_text()


def test_one_run_converges_both_colos(converged, fleet):
    r = converged["first"]
    assert r.returncode == 0, r.stdout[-10000:] + r.stderr[-3000:]
    children = converged["layout"]["all"]["children"]["trading"]["children"]
    assert {"trading_ld4", "trading_ty3"} <= set(children)
    for name in fleet["hosts"]:
        assert converged["first_recap"][name]["failed"] == 0 and converged["first_recap"][name]["changed"] > 0
        assert f"T-1.x SKIPPED on {name}" in r.stdout


def test_second_run_changes_nothing_on_either_host(converged, fleet):
    r = converged["second"]
    assert r.returncode == 0, r.stdout[-6000:]
    assert {n: converged["second_recap"][n]["changed"] for n in fleet["hosts"]} == {n: 0 for n in fleet["hosts"]}, \
        changed_tasks(r.stdout)


def test_each_host_has_the_core_plan_of_its_own_hardware(converged, fleet, tmp_path):
    plans = {}
    for name, hw in HARDWARE.items():
        topo = tmp_path / name
        make_topology(topo, **hw)
        cfg_actors = ["md.binance", "md.coinbase", "engine", "fix.coinbase", "recorder"]
        want = coreplan.make_plan(coreplan.read_topology(topo), cfg_actors).to_dict()
        got = json.loads(_read(fleet, name, "etc/appliance/tuning.json"))["plan"]
        assert not got["degraded"]
        assert {k: got[k] for k in ("housekeeping", "isolated", "actors")} == \
            {k: want[k] for k in ("housekeeping", "isolated", "actors")}, name
        for actor, cpu in got["actors"].items():
            kind, _, inst = actor.partition(".")
            unit = f"appliance-{kind}@{inst}.service" if inst else f"appliance-{kind}.service"
            assert f"CPUAffinity={cpu}\n" in _read(fleet, name, f"etc/systemd/system/{unit}.d/50-cores.conf")
        # the exporter is no actor: the housekeeping CPUs
        assert f"CPUAffinity={got['housekeeping_list']}\n" in \
            _read(fleet, name, "etc/systemd/system/appliance-exporter.service.d/50-cores.conf")
        plans[name] = got
    ld4, ty3 = plans.values()
    assert ld4["housekeeping"] != ty3["housekeeping"] and ld4["actors"] != ty3["actors"]


def test_group_vars_of_each_colo_reach_its_host(converged, fleet):
    ld4 = _read(fleet, "ld4-trade-01.example.net", "etc/chrony/chrony.conf")
    ty3 = _read(fleet, "ty3-trade-01.example.net", "etc/chrony/chrony.conf")
    assert "server time.cloudflare.com iburst" in ld4 and "ntp.nict.jp" not in ld4
    assert "server ntp.nict.jp iburst" in ty3 and "time.cloudflare.com" not in ty3
    for name in fleet["hosts"]:
        cfg = _read(fleet, name, "etc/appliance/appliance.toml")
        assert 'ws_url = "wss://ws-feed.exchange.coinbase.com"' in cfg and "[fix.sessions.coinbase]" in cfg
