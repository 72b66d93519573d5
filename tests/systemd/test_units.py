"""systemd/: every unit, with drop-ins rendered from the Ansible templates, passes
`systemd-analyze verify`; the units say what the appliance needs (affinity, memlock, hardening,
restart limits, cancel-on-stop)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
ROLES = REPO / "provision/roles"
ACTOR_UNITS = ["appliance-md@.service", "appliance-engine.service", "appliance-fix@.service",
               "appliance-recorder.service"]
ALL = ["appliance.target", *ACTOR_UNITS, "appliance-cstate.service", "var-lib-appliance-hugepages.mount"]


def parse(path: Path) -> dict:
    """Unit file -> {section: {key: [values]}} (systemd allows repeated keys)."""
    out: dict = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        section.setdefault(k.strip(), []).append(v.strip())
    return out


def render(template: Path, **ctx) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda s: "#\n# " + s + "\n#"
    return env.from_string(template.read_text()).render(ansible_managed="Ansible managed", **ctx)


def _system_units_dir() -> Path | None:
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d, "sysinit.target").exists():
            return Path(d)
    return None


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory):
    """A root with the distribution's units, ours, rendered drop-ins and the executables."""
    if shutil.which("systemd-analyze") is None or _system_units_dir() is None:
        pytest.skip("systemd-analyze / systemd units not installed (apt-get install systemd)")
    root = tmp_path_factory.mktemp("verify-root")
    shutil.copytree(_system_units_dir(), root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for u in ALL:
        shutil.copy(UNITS / u, etc / u)
    for exe in ("opt/appliance/venv/bin/appliance", "usr/local/sbin/appliance-cstate-hold"):
        p = root / exe
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    plan = {"degraded": False}
    for unit, cpu in {"appliance-md@binance.service": 2, "appliance-engine.service": 3,
                      "appliance-fix@coinbase.service": 4, "appliance-recorder.service": 5}.items():
        d = etc / f"{unit}.d"
        d.mkdir()
        (d / "50-cores.conf").write_text(render(ROLES / "appliance/templates/50-cores.conf.j2",
                                                item={"key": unit, "value": cpu}, appliance_core_plan=plan,
                                                appliance_sched_fifo=True, appliance_sched_priority=50))
    (etc / "appliance-cstate.service.d").mkdir()
    (etc / "appliance-cstate.service.d/50-latency.conf").write_text(
        "[Service]\nEnvironment=APPLIANCE_CSTATE_LATENCY_US=0\n")
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                          cwd=root / "etc/systemd/system", capture_output=True, text=True, timeout=60)


def test_every_unit_with_rendered_drop_ins_verifies_clean(verify_root):
    r = verify(verify_root, "appliance.target", "appliance-md@binance.service", "appliance-engine.service",
               "appliance-fix@coinbase.service", "appliance-recorder.service", "appliance-cstate.service",
               "var-lib-appliance-hugepages.mount")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_verify_catches_a_broken_drop_in(verify_root, tmp_path):
    """The check above can fail: a misspelt key in a drop-in is reported."""
    root = tmp_path / "r"
    shutil.copytree(verify_root, root, symlinks=True)
    (root / "etc/systemd/system/appliance-engine.service.d/50-cores.conf").write_text(
        "[Service]\nCPUAfinity=3\n")
    r = verify(root, "appliance-engine.service")
    assert "CPUAfinity" in r.stderr


def test_drop_in_pins_the_actor_and_sets_fifo_when_asked():
    text = render(ROLES / "appliance/templates/50-cores.conf.j2", item={"key": "appliance-engine.service", "value": 7},
                  appliance_core_plan={"degraded": False}, appliance_sched_fifo=False, appliance_sched_priority=50)
    conf = parse_text(text)
    assert conf["Service"]["CPUAffinity"] == ["7"]
    assert "CPUSchedulingPolicy" not in conf["Service"]


def parse_text(text: str) -> dict:
    out: dict = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        section.setdefault(k, []).append(v)
    return out


@pytest.mark.parametrize("unit", ACTOR_UNITS)
def test_actor_units_lock_memory_harden_restart_with_limits_and_log_to_journal(unit):
    u = parse(UNITS / unit)
    s = u["Service"]
    assert s["LimitMEMLOCK"] == ["infinity"]
    assert s["User"] == ["appliance"] and s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["PrivateTmp"] == ["yes"]
    assert "/var/lib/appliance" in s["ReadWritePaths"][0] and "/dev/shm" in s["ReadWritePaths"][0]
    assert set(s["CapabilityBoundingSet"][0].split()) == {"CAP_IPC_LOCK", "CAP_SYS_NICE"}
    assert s["Restart"] == ["on-failure"]
    assert int(u["Unit"]["StartLimitBurst"][0]) > 0 and int(u["Unit"]["StartLimitIntervalSec"][0]) > 0
    assert s["StandardOutput"] == ["journal"]
    assert u["Install"]["WantedBy"] == ["appliance.target"]
    assert u["Unit"]["PartOf"] == ["appliance.target"]


@pytest.mark.parametrize("unit,command", [
    ("appliance-md@.service", "appliance md --venue %i"),
    ("appliance-engine.service", "appliance engine"),
    ("appliance-fix@.service", "appliance fix gateway --session %i"),
    ("appliance-recorder.service", "appliance recorder"),
])
def test_actor_units_run_the_appliance_cli(unit, command):
    assert parse(UNITS / unit)["Service"]["ExecStart"] == [f"/opt/appliance/venv/bin/{command}"]


@pytest.mark.parametrize("unit", ["appliance-engine.service", "appliance-fix@.service"])
def test_stopping_the_trader_sets_the_kill_switch_first(unit):
    stop = parse(UNITS / unit)["Service"]["ExecStop"]
    assert stop and stop[0].startswith("/opt/appliance/venv/bin/appliance kill --reason")


def test_fix_gateways_stop_after_the_engine_so_they_can_send_cancels():
    """systemd stops units in the reverse of their start order: a gateway ordered Before= the
    engine is stopped after it."""
    unit = parse(UNITS / "appliance-fix@.service")["Unit"]
    assert "appliance-engine.service" in unit["Before"][0].split()
    assert "appliance-engine.service" not in unit["After"][0].split()
    assert "appliance-fix@" not in " ".join(parse(UNITS / "appliance-engine.service")["Unit"].get("Before", []))


@pytest.mark.parametrize("unit", ACTOR_UNITS)
def test_stopping_the_target_waits_for_every_actor(unit):
    """An actor ordered After= the target keeps systemd from ordering the target after it (the
    default for units a target wants), so the target stops last and `systemctl stop` waits."""
    assert "appliance.target" in parse(UNITS / unit)["Unit"]["After"][0].split()


@pytest.mark.parametrize("unit", ["appliance-md@.service", "appliance-engine.service", "appliance-fix@.service"])
def test_the_recorder_starts_before_and_stops_after_every_other_actor(unit):
    assert "appliance-recorder.service" in parse(UNITS / unit)["Unit"]["After"][0].split()


def test_hugetlbfs_mount_unit_name_matches_its_path():
    u = parse(UNITS / "var-lib-appliance-hugepages.mount")
    where = u["Mount"]["Where"][0]
    if shutil.which("systemd-escape"):
        name = subprocess.run(["systemd-escape", "--path", "--suffix=mount", where], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert name == "var-lib-appliance-hugepages.mount"
    opts = u["Mount"]["Options"][0].split(",")
    assert "gid=appliance" in opts and "pagesize=2M" in opts and "mode=0770" in opts
    # mount(8) resolves uid=/gid= names when the unit starts: the hugepages role creates the group
    # before it mounts, the user is created later by the appliance role
    assert not any(o.startswith("uid=") for o in opts)
