"""The units for real: provision/site.yml installs the appliance into a systemd-nspawn container
(systemd as PID 1, native speed) and `systemctl start appliance.target` runs it in sim mode
against a venue simulator and the FIX mock exchange on loopback.

The scenario, run once (module fixture), then asserted piece by piece:

1. warm-up: the role ran `appliance compile` into the units' NUMBA_CACHE_DIR; a first start
   (which would compile whatever the cache lacks) and stop, then the halt it leaves is reset;
2. start: every actor runs on the CPU of the core plan and `appliance status` shows it alive;
   the strategy has orders working at the exchange;
3. `kill -9` of the md gateway: systemd restarts it (Restart=on-failure), it registers again and
   the engine resynchronises its books from the new ring;
4. `systemctl stop appliance.target`: ExecStop pulls the kill switch, the engine acknowledges and
   cancels, the gateways outlive the engine and the recorder outlives everyone; the exchange's
   own record shows every order closed;
5. the journal is intact (`appliance journal stats`);
and the exporter (appliance-exporter.service, enabled by the role on the housekeeping CPUs)
serves the running appliance's metrics on the [telemetry] port.

Slow (debootstrap once per session, a playbook run, numba compiling once: several minutes).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time

import pytest
import yaml

from tests.provision import guest
from tests.provision.ansible_run import REPO, playbook, snapshot_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

VENUE_DATA = REPO / "tests/data/venues"
UNITS = {"md.binance": "appliance-md@binance.service", "engine": "appliance-engine.service",
         "fix.sim": "appliance-fix@sim.service", "recorder": "appliance-recorder.service"}
CLI = "runuser -u appliance -- env NUMBA_CACHE_DIR=/var/lib/appliance/numba-cache /opt/appliance/venv/bin/appliance"
EXCHANGE_STORE = "var/lib/sim-exchange/FIX.4.4-SIMEX-APPLIANCE/messages"
WORKING = (b"0", b"1")


def exchange_orders(raw: bytes) -> dict[bytes, tuple]:
    """OrderID -> (OrdStatus, ExecType) of the last ExecutionReport the exchange sent for it, from
    its session store (records of ``<IQII4x`` magic, seq, length, crc32 + the raw message)."""
    rec = struct.Struct("<IQII4x")
    out: dict[bytes, tuple] = {}
    off = 0
    while off + rec.size <= len(raw):
        magic, _seq, n, _crc = rec.unpack_from(raw, off)
        if magic != 0x46495831:
            break
        msg = raw[off + rec.size:off + rec.size + n]
        off += rec.size + n
        tags = dict(f.split(b"=", 1) for f in msg.split(b"\x01") if b"=" in f)
        if tags.get(b"35") == b"8" and b"37" in tags and tags.get(b"150") != b"I":
            out[tags[b"37"]] = (tags.get(b"39"), tags.get(b"150"))
    return out


class Appliance:
    """The container and what the test does in it."""

    def __init__(self, ctr: guest.Container):
        self.ctr = ctr
        self.ssh = ctr.ssh

    def sh(self, command: str, timeout: float = 120) -> str:
        return self.ssh.out(command, timeout=timeout)

    def cli(self, args: str, timeout: float = 180, check: bool = True):
        r = self.ssh.run(f"{CLI} {args}", timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"appliance {args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def status(self) -> dict:
        return json.loads(self.cli("status --json").stdout)

    def show(self, unit: str, *props: str) -> dict:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -u {unit} --no-pager -o cat", timeout=60)

    def exchange(self) -> dict:
        p = self.ctr.root / EXCHANGE_STORE
        return exchange_orders(p.read_bytes()) if p.exists() else {}

    def diagnostics(self) -> str:
        parts = []
        for unit in [*UNITS.values(), "sim-venue.service", "sim-exchange.service"]:
            r = self.ssh.run(f"systemctl status --no-pager -n 40 {unit}", timeout=60)
            parts.append(r.stdout[-2500:])
        return "\n".join(parts)

    def wait_trading(self, timeout: float, what: str) -> dict:
        """Until every actor is alive, the engine loops and the strategy has working orders."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            failed = [u for u in UNITS.values() if self.show(u, "ActiveState")["ActiveState"] == "failed"]
            if failed:
                last = f"failed: {failed}; {last}"
                break
            try:
                st = self.status()
            except (AssertionError, ValueError) as e:
                last = str(e)[-500:]
                time.sleep(3)
                continue
            alive = {a["name"] for a in st["actors"] if a["alive"]}
            eng = st.get("engine") or {}
            working = sum(len(s["open_orders"]) for s in eng.get("strategies", []))
            fresh = eng.get("pid") and eng.get("pid") == st.get("engine_pid")
            last = {"alive": sorted(alive), "engine_pid": st.get("engine_pid"), "working": working,
                    "risk": st.get("risk_state"), "kill": st.get("kill")}
            if set(UNITS) <= alive and fresh and working > 0:
                return st
            time.sleep(3)
        raise AssertionError(f"{what}: not trading after {timeout:.0f} s (last: {last})\n{self.diagnostics()}")


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    missing = guest.missing_tools("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen", "ansible-playbook")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install systemd-container debootstrap openssh-client)")
    tree = guest.session_tree(tmp_path_factory)
    work = tmp_path_factory.mktemp("appliance-target")
    wheels = guest.session_wheelhouse(tmp_path_factory)
    data = work / "venue-data"
    data.mkdir()
    for f in VENUE_DATA.glob("BINANCE.*"):
        shutil.copy(f, data / f.name)
    ctr = guest.Container(work / "ctr", tree, guest.ssh_key(work), "trade-sim",
                          binds={wheels: "/wheelhouse", data: "/venue-data"},
                          capabilities=("CAP_IPC_LOCK",))     # the actors' units keep it (mlock)
    try:
        ctr.start()
        yield Appliance(ctr)
    finally:
        ctr.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def provisioned(container, tmp_path_factory):
    work = tmp_path_factory.mktemp("appliance-target-run")
    repo = snapshot_repo(work / "repo")
    ws_port, fix_port, metrics_port = guest.free_port(), guest.free_port(), guest.free_port()
    host = {
        **container.ssh.inventory_vars(),
        "appliance_pack_dir": str(work / "pack"),
        "appliance_requirements": guest.requirements(),
        "appliance_pip_env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"},
        # a container shares the host's kernel: its knobs are the host's business
        "hugepages_reserve_2m": False, "hugepages_mount": False, "irq_enabled": False,
        "sysctl_enabled": False,
        # the sim: one venue, one FIX session, one market maker (as `appliance sim` runs it)
        "appliance_wait_strategy": "backoff",
        "appliance_wait_options": {"spin_iterations": 200, "backoff_min_ns": 20000, "backoff_max_ns": 500000},
        # the recording is 31 s long, then quiet: books must not go stale under the test; the
        # instruments are the role's defaults, the recorded Binance session's (1e-8 grids)
        "appliance_venues": [{"name": "binance", "ws_url": f"ws://127.0.0.1:{ws_port}/binance",
                              "rest_url": f"http://127.0.0.1:{ws_port}/binance", "stale_after_ms": 3600000}],
        "appliance_fix_sessions": [{"name": "sim", "host": "127.0.0.1", "port": fix_port,
                                    "sender_comp_id": "APPLIANCE", "target_comp_id": "SIMEX",
                                    "begin_string": "FIX.4.4", "heartbeat_s": 5, "exec_ring": "exec",
                                    "order_ring": "orders", "session_index": 0, "venue": "binance"}],
        # the sim's market maker on NKNUSDT and its limits (appliance/sim/sim.toml)
        "appliance_strategies": [{"kind": "avellaneda_stoikov", "name": "mm-nknusdt", "venue": "binance",
                                  "symbol": "NKNUSDT", "session": 0,
                                  "params": {"qty": 10000000000, "max_inventory": 40000000000, "levels": 1,
                                             "warmup_events": 5, "price_unit": 10000.0, "requote_ticks": 2000,
                                             "min_half_spread": 0.5}}],
        "appliance_risk": {"max_loss": 100.0, "loss_streak_reduce": 8, "loss_streak_pause": 12,
                           "drawdown_reduce": 20.0, "drawdown_pause": 40.0, "reset_utc": "",
                           "limits": {"max_qty": 100000000000000, "max_notional": 100.0,
                                      "max_position": 1000000000000, "max_open_orders": 8, "collar_bps": 500,
                                      "max_spread_ticks": 100000000, "self_trade_prevention": True},
                           "venues": {"binance": {"rate_per_s": 50, "burst": 100, "check_balance": False}}},
        # the host network is shared with the machine: a free port for the exporter
        "appliance_telemetry": {"exporter_port": metrics_port},
    }
    inventory = work / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"trading": {"hosts": {"trade-sim": host}}}}}))
    r, recap = playbook(["-i", str(inventory), "site.yml"], cwd=repo / "provision", timeout=1500)
    assert r.returncode == 0, r.stdout[-10000:] + r.stderr[-3000:]
    # the simulators, as transient units next to the appliance (not part of appliance.target)
    # as the appliance user: the exchange is an actor of the appliance's control block and shared
    # memory (a root-owned control region would lock the units out), with the units' numba cache
    run_as = ("-p User=appliance -p Group=appliance -E NUMBA_CACHE_DIR=/var/lib/appliance/numba-cache "
              "-E APPLIANCE_CONFIG=/etc/appliance/appliance.toml")
    container.sh(f"systemd-run --unit=sim-venue {run_as} -E APPLIANCE_VENUE_DATA=/venue-data "
                 f"/opt/appliance/venv/bin/appliance venue-sim --venue binance --port {ws_port} --pace realtime")
    container.sh(f"systemd-run --unit=sim-exchange {run_as} -p StateDirectory=sim-exchange "
                 f"/opt/appliance/venv/bin/appliance fix exchange --port {fix_port} --store /var/lib/sim-exchange")
    return {"run": r, "recap": recap["trade-sim"], "metrics_port": metrics_port,
            "plan": json.loads((container.ctr.root / "etc/appliance/tuning.json").read_text())["plan"]}


@pytest.fixture(scope="module")
def scenario(container, provisioned):
    app = container
    seen: dict = {}
    # 1. warm-up (a first start loads the cache `appliance compile` filled)
    seen["compile_cmd"] = app.ssh.run("/opt/appliance/venv/bin/appliance compile --help").returncode
    app.sh("systemctl start appliance.target")
    app.wait_trading(1500, "first start (compiling into the numba cache)")
    app.sh("systemctl stop appliance.target", timeout=180)
    app.cli("kill --reset --confirm")
    # 2. start warm
    app.sh("systemctl start appliance.target")
    seen["up"] = app.wait_trading(300, "start with a warm numba cache")
    seen["status_text"] = app.cli("status").stdout
    # the exporter, as Prometheus scrapes it (one scrape after the engine counted market data)
    seen["exporter"] = app.show("appliance-exporter.service", "ActiveState", "MainPID", "NRestarts")
    st = app.ssh.run(f"cat /proc/{seen['exporter']['MainPID']}/status")
    m = re.search(r"^Cpus_allowed_list:\s*(\S+)", st.stdout, re.M)
    seen["exporter_cpus"] = m.group(1) if m and seen["exporter"]["MainPID"] != "0" else None
    seen["metrics"] = app.ssh.run(f"python3 -c 'import urllib.request; print(urllib.request.urlopen("
                                  f"\"http://127.0.0.1:{provisioned['metrics_port']}/metrics\", timeout=30)"
                                  f".read().decode())'", timeout=60)
    seen["exporter_journal"] = app.journal("appliance-exporter.service")
    seen["affinity"] = {}
    for actor, unit in UNITS.items():
        pid = app.show(unit, "MainPID")["MainPID"]
        cpus = re.search(r"^Cpus_allowed_list:\s*(\S+)", app.sh(f"cat /proc/{pid}/status"), re.M).group(1)
        seen["affinity"][actor] = {"unit": app.show(unit, "CPUAffinity")["CPUAffinity"], "process": cpus}
    # 3. kill -9 the md gateway
    md = UNITS["md.binance"]
    before = app.show(md, "MainPID", "NRestarts")
    app.sh(f"kill -9 {before['MainPID']}")
    deadline = time.monotonic() + 120
    after = before
    while time.monotonic() < deadline:
        after = app.show(md, "MainPID", "NRestarts", "ActiveState")
        if after["ActiveState"] == "active" and after["MainPID"] not in ("0", before["MainPID"]):
            break
        time.sleep(1)
    seen["md_restart"] = {"before": before, "after": after}
    seen["rejoined"] = app.wait_trading(300, "after the md gateway was killed")
    time.sleep(3)     # the engine checks for restarted writers twice a second
    seen["engine_log_after_kill"] = app.journal(UNITS["engine"])
    # 4. stop
    seen["exchange_before_stop"] = app.exchange()
    seen["stop"] = app.ssh.run("systemctl stop appliance.target", timeout=300)
    seen["exchange_after_stop"] = app.exchange()
    seen["units_after_stop"] = {a: app.show(u, "ActiveState", "Result", "InactiveEnterTimestampMonotonic")
                                for a, u in UNITS.items()}
    seen["engine_log"] = app.journal(UNITS["engine"])
    seen["fix_log"] = app.journal(UNITS["fix.sim"])
    seen["exchange_log"] = app.journal("sim-exchange.service")
    seen["status_after_stop"] = app.status()
    # 5. the journal
    seen["journal"] = app.cli("journal stats --json /var/lib/appliance/journal", check=False)
    seen["orders_journal"] = app.cli("journal cat --ring orders --json /var/lib/appliance/journal", check=False)
    return seen


def test_the_role_compiled_the_hot_paths_into_the_units_cache(scenario, provisioned):
    assert scenario["compile_cmd"] == 0
    assert re.search(r"TASK \[appliance : T-8.x \| Compile the hot paths into the numba cache\][ *]*\nchanged:",
                     provisioned["run"].stdout), provisioned["run"].stdout[-4000:]


def test_the_exporter_runs_on_the_housekeeping_cpus_and_serves_the_appliance(scenario, provisioned):
    log = scenario["exporter_journal"][-3000:]
    assert scenario["exporter"]["ActiveState"] == "active" and scenario["exporter"]["NRestarts"] == "0", \
        (scenario["exporter"], log)
    assert scenario["exporter_cpus"] == provisioned["plan"]["housekeeping_list"], log
    m = scenario["metrics"]
    assert m.returncode == 0, m.stderr[-2000:] + log
    for actor in UNITS:
        assert re.search(rf'^appliance_actor_up\{{[^}}]*actor="{re.escape(actor)}"[^}}]*\}} 1(\.0)?$', m.stdout, re.M), \
            (actor, m.stdout[:3000])
    md = re.search(r'^appliance_engine_md_total\{[^}]*\} (\S+)$', m.stdout, re.M)
    assert md and float(md.group(1)) > 0, m.stdout[:3000]


def test_a_container_without_grub_gets_every_other_role_and_says_why_the_kernel_line_was_skipped(provisioned):
    out = provisioned["run"].stdout
    assert "T-1.x SKIPPED on trade-sim: /usr/sbin/update-grub not found" in out
    assert provisioned["recap"]["failed"] == 0 and provisioned["recap"]["changed"] > 0


def test_every_actor_runs_on_its_core_plan_cpu(scenario, provisioned):
    actors = provisioned["plan"]["actors"]
    assert set(actors) == set(UNITS)
    for actor, aff in scenario["affinity"].items():
        assert aff == {"unit": str(actors[actor]), "process": str(actors[actor])}, (actor, aff)


def test_status_shows_every_actor_alive_on_its_core(scenario, provisioned):
    st, text = scenario["up"], scenario["status_text"]
    by_name = {a["name"]: a for a in st["actors"]}
    for actor, cpu in provisioned["plan"]["actors"].items():
        assert by_name[actor]["alive"] and by_name[actor]["core"] == cpu, by_name.get(actor)
        assert re.search(rf"^\s+{re.escape(actor)}\s+pid \d+\s+alive\s+core {cpu}\b", text, re.M), text
    assert st["risk_state"] == "RUNNING" and not st["kill"]["set"]


def test_a_killed_actor_is_restarted_by_systemd_and_rejoins(scenario):
    r = scenario["md_restart"]
    assert int(r["after"]["NRestarts"]) == int(r["before"]["NRestarts"]) + 1
    assert r["after"]["MainPID"] != r["before"]["MainPID"]
    md = {a["name"]: a for a in scenario["rejoined"]["actors"]}["md.binance"]
    assert md["alive"] and str(md["pid"]) == r["after"]["MainPID"]
    assert "md.binance writer restarted: resynchronised" in scenario["engine_log_after_kill"]


def test_stopping_the_target_cancels_every_working_order_at_the_exchange(scenario):
    assert scenario["stop"].returncode == 0, scenario["stop"].stderr
    before = {oid for oid, (status, _) in scenario["exchange_before_stop"].items() if status in WORKING}
    assert before, "orders were working at the exchange before the stop"
    after = scenario["exchange_after_stop"]
    logs = f"--- gateway\n{scenario['fix_log'][-3000:]}\n--- exchange\n{scenario['exchange_log'][-2000:]}"
    assert {oid: after[oid] for oid in before if after[oid][0] != b"4"} == {}, logs
    assert [oid for oid, (status, _) in after.items() if status in WORKING] == [], logs
    log = scenario["engine_log"]
    assert re.search(r"HALTED \(epoch \d+\): engine pid \d+ acknowledged in [\d.]+ ms", log), log[-3000:]
    m = re.findall(r"HALTED \(epoch \d+, kill switch\): (\d+) working orders cancelled", log)
    assert m and int(m[-1]) >= 1, log[-3000:]


def test_the_engine_stops_first_the_gateway_after_it_and_the_recorder_last(scenario):
    units = scenario["units_after_stop"]
    assert all(u["ActiveState"] == "inactive" and u["Result"] == "success" for u in units.values()), units
    t = {a: int(u["InactiveEnterTimestampMonotonic"]) for a, u in units.items()}
    assert t["engine"] < t["fix.sim"] < t["recorder"] and t["md.binance"] < t["recorder"], t
    st = scenario["status_after_stop"]
    assert st["kill"]["set"] and st["kill"]["persisted"]["halted"], "the halt outlives the stop"


def test_the_journal_is_intact_after_the_stop(scenario):
    r = scenario["journal"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    stats = json.loads(r.stdout)
    assert stats["ok"]
    rings = {s["ring"]: s for s in stats["rings"]}
    assert {"md.binance", "orders", "exec"} <= set(rings)
    for name, s in rings.items():
        assert s["records"] > 0 and s["corrupt_frames"] == 0 and s["truncated_files"] == 0, (name, s)
        assert s["open_files"] == 0, f"{name}: the recorder closed every file (it stopped last)"
    orders = [json.loads(line) for line in scenario["orders_journal"].stdout.splitlines() if line.startswith("{")]
    assert any(o["type"] == "CANCEL" for o in orders), "the kill's cancels are in the journal"
