"""Read-only host audit: is this host (still) tuned the way provision/site.yml tuned it?

Every knob in ``tuning/knobs.json`` is checked under a root path (default ``/``; tests point it at
fixture /proc, /sys and /etc trees) and reported as pass / fail / n/a with expected and actual
values, using the same IDs as the Ansible task names (``T-5.1 | ...``).

Expected values come from, in order:

1. ``<root>/etc/appliance/tuning.json``, written by the playbook with the *effective* on/off
   variables, values and the core plan it applied to this host (inventory overrides included);
2. else the defaults in ``tuning/knobs.json`` and a core plan computed here from the appliance
   config and this host's topology (what the playbook would compute).

A knob is n/a when it is switched off or cannot apply on this host (no cpufreq, no NIC named, a
degraded core plan with nothing to isolate, a sysctl this kernel does not have); n/a always says
why. Nothing is written anywhere. The exit status of ``appliance tuning check`` is 0 only when
every applicable knob passes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tuning.coreplan import (actors_from_config, format_cpulist, make_plan, parse_cpulist,
                             parse_cpumask, read_topology)

KNOBS_PATH = Path(__file__).with_name("knobs.json")
STATE_PATH = "etc/appliance/tuning.json"          # relative to the root
PASS, FAIL, NA = "pass", "fail", "n/a"


@dataclass
class Check:
    id: str
    name: str
    expected: str
    actual: str
    status: str


@dataclass
class Expected:
    """What the host should look like: knob on/off flags, knob values and the core plan."""
    knobs: list                     # knob definitions from knobs.json
    enabled: dict                   # id -> bool
    values: dict
    plan: dict                      # CorePlan.to_dict()
    source: str
    units: list = None              # base units to find installed and enabled (knobs.json "units")

    def __post_init__(self):
        if self.units is None:
            self.units = list(load_knobs()["units"])

    @property
    def housekeeping(self) -> list:
        return list(self.plan["housekeeping"])

    @property
    def isolated(self) -> list:
        return list(self.plan["isolated"])


def load_knobs(path: Path = KNOBS_PATH) -> dict:
    return json.loads(Path(path).read_text())


def expected_for(root: str | os.PathLike = "/", config_path: str | None = None,
                 nic: str | None = None) -> Expected:
    """The playbook's record on the host if present, else knobs.json defaults + a computed plan.

    The record carries the knob catalogue too, so a deployed host needs nothing else."""
    state = Path(root) / STATE_PATH
    if state.exists():
        try:
            data = json.loads(state.read_text())
            catalog = {"knobs": data["knobs"], "values": data["values"], "units": data["units"]} \
                if "knobs" in data else load_knobs()
            enabled = {k["id"]: bool(data["enabled"].get(k["id"], False)) for k in catalog["knobs"]}
            values = {**catalog["values"], **data["values"]}
            plan = data["plan"]
            plan["housekeeping"], plan["isolated"]  # noqa: B018 - required keys
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{state}: not a valid tuning state file ({e!r}); "
                             "re-run the playbook or delete it") from None
        return Expected(catalog["knobs"], enabled, values, plan, str(state), list(catalog["units"]))
    catalog = load_knobs()
    from appliance import config as appcfg
    cfg = appcfg.load(config_path)
    values = dict(catalog["values"])
    if nic is not None:
        values["nic_name"] = nic
    plan = make_plan(read_topology(root, values["nic_name"]), actors_from_config(cfg)).to_dict()
    enabled = {k["id"]: bool(k["default"]) for k in catalog["knobs"]}
    return Expected(catalog["knobs"], enabled, values, plan,
                    f"{KNOBS_PATH.name} defaults + core plan for {cfg.path}", list(catalog["units"]))


class Host:
    """Read-only accessors for one root; ``run`` executes ethtool (injectable for tests)."""

    def __init__(self, root: str | os.PathLike = "/", run: Callable[[list], str] | None = None):
        self.root = Path(root)
        self._run = run or _run_command

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def cmdline(self) -> list[str]:
        return (self.read("proc/cmdline") or "").split()

    def cmdline_value(self, param: str) -> str | None:
        for tok in self.cmdline():
            if tok == "--":
                break
            key, eq, value = tok.partition("=")
            if key == param:
                return value if eq else ""
        return None

    def processes(self) -> set[str] | None:
        """Command names of running processes; None when /proc shows no process at all."""
        names = set()
        for p in self.path("proc").glob("[0-9]*/comm"):
            try:
                names.add(p.read_text().strip())
            except OSError:
                continue  # the process exited while we looked
        return names or None

    def run(self, argv: list) -> str:
        return self._run(argv)


def _run_command(argv: list) -> str:
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} not installed")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def _na(why: str) -> tuple:
    return ("-", why, NA)


def _cpus(cpus) -> str:
    return format_cpulist(cpus) or "(none)"


# -- checks: each returns (expected, actual, status) ------------------------------------------

def check_cmdline(h: Host, e: Expected, knob: dict) -> tuple:
    params = list(knob.get("params") or e.values[knob["value_key"]])
    have = set(h.cmdline())
    missing = [p for p in params if p not in have]
    actual = " ".join(p for p in params if p in have) or "(none)"
    return (" ".join(params), actual if not missing else f"missing: {' '.join(missing)}",
            FAIL if missing else PASS)


def _cmdline_and_sysfs(h: Host, e: Expected, param: str, sysfs: str) -> tuple:
    if not e.isolated:
        return _na("core plan is degraded: no isolated CPUs on this host")
    want = e.plan["kernel_args"][param]
    got = h.cmdline_value(param)
    live = h.read(sysfs)
    want_cpus = e.isolated
    ok = got is not None and parse_cpulist(got.split(",", 2)[-1] if param == "isolcpus" else got) == want_cpus \
        and (param != "isolcpus" or got.startswith("managed_irq,domain,"))
    live_ok = live is not None and parse_cpulist(live) == want_cpus
    actual = f"cmdline {param}={got if got is not None else '(absent)'}; {sysfs.rsplit('/', 1)[-1]}: " \
             f"{live if live else '(empty)'}"
    return (f"{param}={want}; in effect: {_cpus(want_cpus)}", actual, PASS if ok and live_ok else FAIL)


def check_cmdline_isolcpus(h: Host, e: Expected, knob: dict) -> tuple:
    return _cmdline_and_sysfs(h, e, "isolcpus", "sys/devices/system/cpu/isolated")


def check_cmdline_nohz_full(h: Host, e: Expected, knob: dict) -> tuple:
    return _cmdline_and_sysfs(h, e, "nohz_full", "sys/devices/system/cpu/nohz_full")


def check_cmdline_plan_param(h: Host, e: Expected, knob: dict) -> tuple:
    if not e.isolated:
        return _na("core plan is degraded: no isolated CPUs on this host")
    param = knob["param"]
    want = e.plan["kernel_args"][param]
    got = h.cmdline_value(param)
    ok = got is not None and parse_cpulist(got) == parse_cpulist(want)
    return (f"{param}={want}", f"{param}={got}" if got is not None else "(absent)", PASS if ok else FAIL)


def check_hugepages_1g(h: Host, e: Expected, knob: dict) -> tuple:
    d = "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
    want = int(e.values["kernel_cmdline_hugepages_1g_count"])
    got = h.read(d)
    if got is None:
        return _na("this CPU/kernel has no 1 GiB huge pages (no pdpe1gb)")
    return (f">= {want}", got, PASS if int(got) >= want else FAIL)


def check_hugepages_2m(h: Host, e: Expected, knob: dict) -> tuple:
    want = int(e.values["hugepages_2m_per_node"])
    nodes = sorted(h.path("sys/devices/system/node").glob("node[0-9]*/hugepages/hugepages-2048kB/nr_hugepages"))
    if nodes:
        per = {p.parts[-4]: int(p.read_text()) for p in nodes}
    else:
        got = h.read("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        if got is None:
            return _na("kernel without 2 MiB huge pages")
        per = {"all": int(got)}
    actual = ", ".join(f"{k}: {v}" for k, v in per.items())
    return (f">= {want} per node", actual, PASS if all(v >= want for v in per.values()) else FAIL)


def _group_gid(h: Host, group: str) -> int | None:
    for line in (h.read("etc/group") or "").splitlines():
        f = line.split(":")
        if len(f) >= 3 and f[0] == group:
            return int(f[2])
    return None


def check_hugetlbfs_mount(h: Host, e: Expected, knob: dict) -> tuple:
    path = e.values["hugepages_mount_path"]
    gid = _group_gid(h, e.values["appliance_group"])
    want = f"hugetlbfs at {path}, pagesize=2M, gid={gid}"
    for line in (h.read("proc/mounts") or "").splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == path:
            opts = f[3].split(",")
            ok = f[2] == "hugetlbfs" and "pagesize=2M" in opts and gid is not None and f"gid={gid}" in opts
            return (want, f"{f[2]} at {f[1]} ({f[3]})", PASS if ok else FAIL)
    return (want, "not mounted", FAIL)


def _cpufreq_files(h: Host, name: str) -> list[Path]:
    return sorted(h.path("sys/devices/system/cpu").glob(f"cpu[0-9]*/cpufreq/{name}"))


def check_governor(h: Host, e: Expected, knob: dict) -> tuple:
    files = _cpufreq_files(h, "scaling_governor")
    if not files:
        return _na("no cpufreq on this host (governor not applicable)")
    want = e.values["cpu_power_governor_name"]
    got = {p.parts[-3]: p.read_text().strip() for p in files}
    bad = {k: v for k, v in got.items() if v != want}
    return (f"{want} on every CPU", "all " + want if not bad else ", ".join(f"{k}: {v}" for k, v in bad.items()),
            FAIL if bad else PASS)


def check_energy_bias(h: Host, e: Expected, knob: dict) -> tuple:
    files = _cpufreq_files(h, "energy_performance_preference")
    if not files:
        return _na("no energy_performance_preference (cpufreq driver without EPP)")
    want = e.values["cpu_power_energy_preference"]
    bad = {p.parts[-3]: p.read_text().strip() for p in files if p.read_text().strip() != want}
    return (f"{want} on every CPU", "all " + want if not bad else ", ".join(f"{k}: {v}" for k, v in bad.items()),
            FAIL if bad else PASS)


def check_cpu_dma_latency(h: Host, e: Expected, knob: dict) -> tuple:
    want = int(e.values["cpu_power_dma_latency_us"])
    p = h.path("dev/cpu_dma_latency")
    if not p.exists():
        return _na("no /dev/cpu_dma_latency (kernel without PM QoS)")
    try:
        raw = p.read_bytes()[:4]
    except PermissionError:
        return (f"<= {want} us", "cannot read /dev/cpu_dma_latency (run as root)", FAIL)
    got = struct.unpack("<i", raw)[0] if len(raw) == 4 else int(raw.decode() or "-1", 16)
    return (f"<= {want} us", f"{got} us", PASS if 0 <= got <= want else FAIL)


def check_irqbalance(h: Host, e: Expected, knob: dict) -> tuple:
    if not e.isolated:
        return _na("core plan is degraded: no isolated CPUs to keep IRQs away from")
    procs = h.processes()
    if procs is None:
        return _na("no processes visible (is /proc mounted?)")
    running = "irqbalance" in procs
    mode = e.values["irq_irqbalance_mode"]
    if not running:
        return ("stopped" if mode == "stop" else f"stopped or banned from {_cpus(e.isolated)}", "not running", PASS)
    if mode == "stop":
        return ("stopped", "running", FAIL)
    banned = None
    for f in ("etc/default/irqbalance", "etc/sysconfig/irqbalance"):
        m = re.search(r'^IRQBALANCE_BANNED_CPULIST="?([0-9,\-]*)"?', h.read(f) or "", re.M)
        if m:
            banned = parse_cpulist(m.group(1))
    ok = banned is not None and set(e.isolated) <= set(banned)
    return (f"banned from {_cpus(e.isolated)}", f"running, banned: {_cpus(banned or [])}", PASS if ok else FAIL)


def check_irq_default_affinity(h: Host, e: Expected, knob: dict) -> tuple:
    if not e.isolated:
        return _na("core plan is degraded: every CPU is a housekeeping CPU")
    got = h.read("proc/irq/default_smp_affinity")
    if got is None:
        return _na("no /proc/irq/default_smp_affinity")
    cpus = [c for c in parse_cpumask(got) if c in e.plan["cpus"]]
    return (_cpus(e.housekeeping), _cpus(cpus), PASS if set(cpus) <= set(e.housekeeping) and cpus else FAIL)


def _irq_cpus(h: Host, irq: Path) -> list[int] | None:
    for name in ("effective_affinity_list", "smp_affinity_list"):
        try:
            text = (irq / name).read_text().strip()
        except OSError:
            continue
        if text:
            return parse_cpulist(text)
    return None


def check_irq_affinities(h: Host, e: Expected, knob: dict) -> tuple:
    if not e.isolated:
        return _na("core plan is degraded: every CPU is a housekeeping CPU")
    hk = set(e.housekeeping)
    bad = []
    irqs = sorted(h.path("proc/irq").glob("[0-9]*"), key=lambda p: int(p.name))
    if not irqs:
        return _na("no IRQs visible (is /proc mounted?)")
    for irq in irqs:
        cpus = _irq_cpus(h, irq)
        if cpus and not set(cpus) <= hk:
            bad.append(f"{irq.name}->{format_cpulist(cpus)}")
    return (f"every IRQ on {_cpus(hk)}", "all on housekeeping" if not bad else "off housekeeping: " + " ".join(bad[:20]),
            FAIL if bad else PASS)


def _nic_irqs(h: Host, nic: str) -> list[str]:
    irqs = [p.name for p in h.path(f"sys/class/net/{nic}/device/msi_irqs").glob("[0-9]*")]
    if not irqs:
        for line in (h.read("proc/interrupts") or "").splitlines():
            f = line.split()
            if f and f[0].endswith(":") and f[0][:-1].isdigit() and nic in f[-1]:
                irqs.append(f[0][:-1])
    return sorted(irqs, key=int)


def nic_cpus(plan: dict) -> list[int]:
    """Housekeeping CPUs on the NIC's NUMA node (all housekeeping CPUs when unknown/none there)."""
    node = plan.get("nic_node", -1)
    on_node = [c for c in plan["housekeeping"] if c in plan["nodes"].get(str(node), [])]
    return on_node or list(plan["housekeeping"])


def check_irq_nic(h: Host, e: Expected, knob: dict) -> tuple:
    nic = e.values["nic_name"]
    if not nic:
        return _na("no NIC named (nic_name is empty)")
    if not e.isolated:
        return _na("core plan is degraded: every CPU is a housekeeping CPU")
    want = set(nic_cpus(e.plan))
    irqs = _nic_irqs(h, nic)
    if not irqs:
        return (_cpus(want), f"no IRQs found for {nic}", NA)
    bad = [f"{i}->{format_cpulist(c)}" for i in irqs
           if (c := _irq_cpus(h, h.path(f"proc/irq/{i}"))) and not set(c) <= want]
    return (f"{nic} IRQs on {_cpus(want)}", f"{len(irqs)} IRQs ok" if not bad else " ".join(bad), FAIL if bad else PASS)


def check_rps_xps(h: Host, e: Expected, knob: dict) -> tuple:
    nic = e.values["nic_name"]
    if not nic:
        return _na("no NIC named (nic_name is empty)")
    want = set(nic_cpus(e.plan))
    bad = []
    files = sorted(h.path(f"sys/class/net/{nic}/queues").glob("rx-*/rps_cpus")) + \
        sorted(h.path(f"sys/class/net/{nic}/queues").glob("tx-*/xps_cpus"))
    for f in files:
        try:
            got = set(parse_cpumask(f.read_text()))
        except OSError:
            continue  # xps_cpus is unreadable on single-queue devices
        if got != want:
            bad.append(f"{f.parts[-2]}/{f.name}={format_cpulist(got) or 0}")
    if not files:
        return _na(f"{nic} has no rx/tx queue directories")
    return (_cpus(want), "all queues ok" if not bad else " ".join(bad), FAIL if bad else PASS)


def check_sysctl(h: Host, e: Expected, knob: dict) -> tuple:
    want_all = e.values["sysctl_values"]
    exp, act, status = [], [], []
    for key in knob["keys"]:
        want = str(want_all[key])
        got = h.read("proc/sys/" + key.replace(".", "/"))
        exp.append(f"{key}={want}")
        if got is None:
            act.append(f"{key}: absent")
            status.append(NA)
        else:
            got = " ".join(got.split())
            act.append(f"{key}={got}")
            status.append(PASS if got == " ".join(want.split()) else FAIL)
    final = FAIL if FAIL in status else PASS if PASS in status else NA
    return (" ".join(exp), " ".join(act), final)


def check_workqueue_cpumask(h: Host, e: Expected, knob: dict) -> tuple:
    got = h.read("sys/devices/virtual/workqueue/cpumask")
    if got is None:
        return _na("no /sys/devices/virtual/workqueue/cpumask")
    cpus = [c for c in parse_cpumask(got) if c in e.plan["cpus"]]
    return (_cpus(e.housekeeping), _cpus(cpus), PASS if set(cpus) == set(e.housekeeping) else FAIL)


def _selected(text: str | None) -> str | None:
    m = re.search(r"\[(\w+)\]", text or "")
    return m.group(1) if m else None


def check_thp(h: Host, e: Expected, knob: dict) -> tuple:
    en = _selected(h.read("sys/kernel/mm/transparent_hugepage/enabled"))
    de = _selected(h.read("sys/kernel/mm/transparent_hugepage/defrag"))
    if en is None:
        return _na("kernel without transparent huge pages")
    return ("enabled=never defrag=never", f"enabled={en} defrag={de}",
            PASS if en == "never" and de in ("never", None) else FAIL)


def _ethtool_fields(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out.setdefault(k.strip(), v.strip())
    return out


def check_nic_coalescing(h: Host, e: Expected, knob: dict) -> tuple:
    nic = e.values["nic_name"]
    if not nic:
        return _na("no NIC named (nic_name is empty)")
    try:
        f = _ethtool_fields(h.run(["ethtool", "-c", nic]))
    except (OSError, subprocess.SubprocessError) as err:
        return ("-", f"ethtool -c {nic}: {err}", FAIL)
    adaptive = "on" if e.values["nic_adaptive_coalescing"] else "off"
    want = {"rx-usecs": str(e.values["nic_rx_usecs"]), "tx-usecs": str(e.values["nic_tx_usecs"])}
    got_adaptive = f.get("Adaptive RX", "n/a").split()[0] if f.get("Adaptive RX") else "n/a"
    bad = [k for k, v in want.items() if f.get(k, v) not in (v, "n/a")]
    if got_adaptive not in (adaptive, "n/a"):
        bad.append("adaptive")
    exp = " ".join(f"{k}={v}" for k, v in want.items()) + f" adaptive-rx={adaptive}"
    act = " ".join(f"{k}={f.get(k, 'n/a')}" for k in want) + f" adaptive-rx={got_adaptive}"
    return (exp, act, FAIL if bad else PASS)


def check_nic_rings(h: Host, e: Expected, knob: dict) -> tuple:
    nic = e.values["nic_name"]
    if not nic:
        return _na("no NIC named (nic_name is empty)")
    try:
        text = h.run(["ethtool", "-g", nic])
    except (OSError, subprocess.SubprocessError) as err:
        return ("-", f"ethtool -g {nic}: {err}", FAIL)
    pre, _, cur = text.partition("Current hardware settings")
    mx, now = _ethtool_fields(pre), _ethtool_fields(cur)
    size = e.values["nic_ring_size"]
    want = {k: (mx.get(k) if size == "max" else str(size)) for k in ("RX", "TX")}
    got = {k: now.get(k) for k in ("RX", "TX")}
    exp = " ".join(f"{k}={v}" for k, v in want.items())
    return (exp, " ".join(f"{k}={v}" for k, v in got.items()), PASS if got == want else FAIL)


def check_process(h: Host, e: Expected, knob: dict) -> tuple:
    name = knob["process"]
    procs = h.processes()
    if procs is None:
        return _na("no processes visible (is /proc mounted?)")
    running = name in procs
    return (f"{name} running", "running" if running else "not running", PASS if running else FAIL)


def check_clocksource(h: Host, e: Expected, knob: dict) -> tuple:
    cs = h.read("sys/devices/system/clocksource/clocksource0/current_clocksource")
    flags: set[str] = set()
    for line in (h.read("proc/cpuinfo") or "").splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    inv = {"constant_tsc", "nonstop_tsc"} <= flags
    return ("clocksource=tsc, constant_tsc+nonstop_tsc",
            f"clocksource={cs}, invariant TSC {'yes' if inv else 'no'}",
            PASS if cs == "tsc" and inv else FAIL)


def check_user(h: Host, e: Expected, knob: dict) -> tuple:
    user, group = e.values["appliance_user"], e.values["appliance_group"]
    has_user = any(line.split(":")[0] == user for line in (h.read("etc/passwd") or "").splitlines())
    has_group = _group_gid(h, group) is not None
    return (f"user {user}, group {group}", f"user {'present' if has_user else 'absent'}, "
            f"group {'present' if has_group else 'absent'}", PASS if has_user and has_group else FAIL)


def check_config(h: Host, e: Expected, knob: dict) -> tuple:
    from appliance import config as appcfg
    path = h.path(e.values["appliance_config_path"])
    try:
        appcfg.load(path)
    except appcfg.ConfigError as err:
        return (f"{e.values['appliance_config_path']} loads", str(err), FAIL)
    return (f"{e.values['appliance_config_path']} loads", "loads", PASS)


def expected_units(e: Expected) -> list[str]:
    units = list(e.units)
    for actor in e.plan["actors"]:
        kind, _, inst = actor.partition(".")
        if kind in ("md", "fix") and inst:
            units.append(f"appliance-{kind}@{inst}.service")
    return list(dict.fromkeys(units))


def check_units(h: Host, e: Expected, knob: dict) -> tuple:
    units = expected_units(e)
    etc = h.path("etc/systemd/system")
    wants = {p.name for p in etc.glob("*.wants/*")}
    problems = []
    for u in units:
        template = re.sub(r"@[^.]+\.", "@.", u)
        if not (etc / u).exists() and not (etc / template).exists():
            problems.append(f"{u}: not installed")
        elif u not in wants:
            problems.append(f"{u}: not enabled")
    return (f"{len(units)} units installed and enabled", "all ok" if not problems else "; ".join(problems),
            FAIL if problems else PASS)


CHECKS: dict[str, Callable] = {name[len("check_"):]: fn for name, fn in globals().items()
                               if name.startswith("check_") and callable(fn)}


def audit(root: str | os.PathLike = "/", expected: Expected | None = None,
          run: Callable[[list], str] | None = None, only: str | None = None) -> list[Check]:
    """Run every knob's check (or those whose id starts with ``only``); never writes anything."""
    e = expected or expected_for(root)
    h = Host(root, run)
    out = []
    for knob in e.knobs:
        if only and not (knob["id"] == only or knob["id"].startswith(only.rstrip(".") + ".")):
            continue
        if not e.enabled.get(knob["id"], False):
            res = ("-", f"switched off ({knob['var']} or {knob['role']}_enabled is false)", NA)
        else:
            try:
                res = CHECKS[knob["check"]](h, e, knob)
            except (OSError, ValueError) as err:
                res = ("-", f"cannot read: {err}", FAIL)
        out.append(Check(knob["id"], knob["name"], *res))
    return out


def ok(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks)


def to_json(checks: list[Check]) -> dict:
    return {"checks": [asdict(c) for c in checks], "ok": ok(checks)}


def format_table(checks: list[Check]) -> str:
    lines = [f"{'ID':<7} {'STATUS':<6} {'KNOB':<48} EXPECTED -> ACTUAL"]
    for c in checks:
        lines.append(f"{c.id:<7} {c.status.upper():<6} {c.name[:48]:<48} {c.expected} -> {c.actual}")
    n_fail = sum(c.status == FAIL for c in checks)
    n_pass = sum(c.status == PASS for c in checks)
    lines.append(f"{n_pass} pass, {n_fail} fail, {len(checks) - n_pass - n_fail} n/a: "
                 + ("host is tuned" if not n_fail else "host is NOT tuned"))
    return "\n".join(lines)
