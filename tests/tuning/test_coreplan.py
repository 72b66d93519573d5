"""tuning/coreplan.py: topology from fixture /sys trees -> housekeeping and isolated cores."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config
from tests.configs import instruments_toml
from tests.tuning.fakehost import make_topology
from tuning.coreplan import (TopologyError, actors_from_config, cpumask_hex, format_cpulist,
                             make_plan, parse_cpulist, parse_cpumask, read_topology)

ACTORS = ["md.binance", "md.coinbase", "engine", "fix.coinbase", "recorder"]


def test_cpulist_round_trips_ranges_singles_and_strides():
    assert parse_cpulist("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("0-7:2/8") == [0, 2, 4, 6]
    assert parse_cpulist("") == []
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"


def test_cpumask_uses_kernel_32_bit_groups_and_round_trips_above_32_cpus():
    assert cpumask_hex([0, 1]) == "00000003"
    assert cpumask_hex([0, 33]) == "00000002,00000001"
    assert parse_cpumask("00000002,00000001") == [0, 33]
    assert parse_cpumask("3") == [0, 1]


def test_two_socket_smt_host_gives_each_actor_a_whole_core_and_idles_its_sibling(tmp_path):
    make_topology(tmp_path, sockets=2, cores=4, threads=2)
    plan = make_plan(read_topology(tmp_path), ACTORS)
    assert not plan.degraded
    assert sorted(plan.actors) == sorted(ACTORS)
    cores = list(plan.actors.values())
    assert len(set(cores)) == len(cores), "two actors share a core"
    n_phys = 8
    for cpu in cores:
        sibling = (cpu + n_phys) % 16
        assert sibling in plan.idle_siblings and sibling in plan.isolated
        assert sibling not in plan.housekeeping and sibling not in cores
    assert {0, 8, 4, 12} <= set(plan.housekeeping), "first core of each node keeps housekeeping"
    assert set(plan.housekeeping).isdisjoint(plan.isolated)
    assert sorted(plan.housekeeping + plan.isolated) == list(range(16))
    assert plan.kernel_args["isolcpus"] == "managed_irq,domain," + format_cpulist(plan.isolated)
    assert plan.kernel_args["irqaffinity"] == format_cpulist(plan.housekeeping)


def test_actors_go_to_the_nics_numa_node_first(tmp_path):
    make_topology(tmp_path, sockets=2, cores=4, threads=1, nic="ens1f0", nic_node=1)
    plan = make_plan(read_topology(tmp_path, "ens1f0"), ["md.binance", "fix.coinbase", "engine", "recorder"])
    node1 = set(range(4, 8))
    # node 1 has 3 free cores after housekeeping: md, fix, engine get them; the recorder goes to node 0
    assert {plan.actors["md.binance"], plan.actors["fix.coinbase"], plan.actors["engine"]} <= node1
    assert plan.actors["recorder"] not in node1
    assert plan.nic_node == 1


def test_nic_with_unknown_numa_node_falls_back_to_node_order(tmp_path):
    make_topology(tmp_path, sockets=2, cores=4, threads=1, nic="eth0", nic_node=-1)
    plan = make_plan(read_topology(tmp_path, "eth0"), ["engine"])
    assert plan.nic_node == -1 and plan.actors["engine"] == 1


def test_too_few_cores_gives_a_degraded_plan_with_nothing_isolated(tmp_path):
    make_topology(tmp_path, sockets=1, cores=2, threads=1)
    plan = make_plan(read_topology(tmp_path), ACTORS)
    assert plan.degraded and plan.isolated == [] and plan.kernel_args == {}
    assert plan.housekeeping == [0, 1]
    assert set(plan.actors.values()) <= {0, 1}
    assert "degraded" in plan.notes[0]


def test_spare_cores_go_to_housekeeping(tmp_path):
    make_topology(tmp_path, sockets=1, cores=8, threads=1)
    plan = make_plan(read_topology(tmp_path), ["engine"])
    assert plan.isolated == [1] and plan.housekeeping == [0, 2, 3, 4, 5, 6, 7]


def test_root_without_sys_tree_raises_a_clear_topology_error(tmp_path):
    with pytest.raises(TopologyError, match="no CPUs under"):
        read_topology(tmp_path)


def test_named_nic_missing_from_sys_raises(tmp_path):
    make_topology(tmp_path)
    with pytest.raises(TopologyError, match="NIC 'ens9' not found"):
        read_topology(tmp_path, "ens9")


def test_actors_come_from_enabled_venues_and_fix_sessions_in_the_config():
    cfg = config.parse({
        "venues": [{"name": "binance"}, {"name": "kraken", "enabled": False}, {"name": "coinbase"}],
        "fix": {"sessions": [{"name": "cb"}, {"name": "off", "enabled": False}]},
    })
    assert actors_from_config(cfg) == ["md.binance", "md.coinbase", "engine", "fix.cb", "recorder"]


def test_fix_session_without_a_name_is_rejected():
    cfg = config.parse({"fix": {"sessions": [{"host": "x"}]}})
    with pytest.raises(ValueError, match=r"fix.sessions\[0\].name"):
        actors_from_config(cfg)


def test_live_host_topology_covers_every_online_cpu():
    topo = read_topology("/")
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    assert sorted(c.cpu for c in topo.cpus) == online
    plan = make_plan(topo, ["engine", "recorder"])
    assert sorted(set(plan.housekeeping) | set(plan.isolated)) == online


def test_script_runs_standalone_with_only_the_stdlib(tmp_path):
    """Ansible copies coreplan.py alone to the target: it must not import the appliance."""
    make_topology(tmp_path / "root", sockets=1, cores=4, threads=2)
    script = Path(__file__).resolve().parents[2] / "tuning/coreplan.py"
    r = subprocess.run([sys.executable, "-I", str(script), "--root", str(tmp_path / "root"), "--json",
                        "--actor", "engine", "--actor", "md.x"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["actors"] == {"md.x": 1, "engine": 2}
    assert plan["idle_siblings"] == [5, 6]
    bad = subprocess.run([sys.executable, "-I", str(script), "--root", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no CPUs under" in bad.stderr


def test_cli_tuning_plan_json_uses_the_config_actors(tmp_path):
    make_topology(tmp_path / "root", sockets=1, cores=8, threads=1)
    cfg = tmp_path / "a.toml"
    cfg.write_text('[[venues]]\nname = "binance"\n[fix.sessions.cb]\nhost = "127.0.0.1"\nport = 4198\n'
                   'sender_comp_id = "A"\ntarget_comp_id = "B"\nvenue = "binance"\n'
                   + instruments_toml("binance", ["NKNUSDT"]))
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "tuning", "plan",
                        "--root", str(tmp_path / "root"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["actors"]) == {"md.binance", "engine", "fix.cb", "recorder"}
