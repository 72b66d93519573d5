"""The core plan: which CPU runs which actor, which CPUs do housekeeping, which stay idle.

Stdlib only and runnable as a script, because Ansible copies this one file to the target and runs
it there (``python3 coreplan.py --json --actor engine ...``) before anything else is installed.

Topology is read under a root path (default ``/``) so tests feed fixture trees:

- ``sys/devices/system/cpu/online``                      online CPUs (cpulist)
- ``sys/devices/system/cpu/cpuN/topology/physical_package_id``, ``core_id``
- ``sys/devices/system/cpu/cpuN/topology/thread_siblings_list`` (``core_cpus_list`` on new kernels)
- ``sys/devices/system/node/nodeN/cpulist``              NUMA nodes (absent = one node)
- ``sys/class/net/<nic>/device/numa_node``               the NIC's node (-1 or absent = unknown)

Rules (every decision is recorded in ``notes``):

1. A physical core is the unit: an actor gets one whole physical core; the core's SMT siblings
   stay idle (listed in ``idle_siblings``, isolated too so the scheduler leaves them alone).
2. Housekeeping keeps the first physical core of every NUMA node (the kernel, IRQs, ssh, chrony,
   systemd) - at least one core overall; spare cores after assignment go to housekeeping too.
3. Actors are placed on the NIC's NUMA node first (md gateways, then fix gateways, then the engine,
   then the recorder), falling back to the other nodes in order.
4. When there are not enough physical cores for housekeeping plus one per actor, the plan is
   ``degraded``: nothing is isolated, every actor is pinned to the housekeeping set and the wait
   strategy must yield (this is the normal case on a 2-core development VM).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACTOR_ORDER = ("md.", "fix.", "engine", "recorder")


class TopologyError(ValueError):
    """The /sys tree under the given root does not describe any CPU."""


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]; '' -> []."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            hi, _, stride = hi.partition(":")
            step = int(stride.split("/")[0]) if stride else 1
            cpus.update(range(int(lo), int(hi) + 1, step))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def format_cpulist(cpus) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (the kernel's own format)."""
    out: list[str] = []
    s = sorted(set(cpus))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)


def cpumask_hex(cpus) -> str:
    """CPU set -> the kernel's hex mask format with 32-bit comma groups ('00000001,00000003')."""
    mask = 0
    for c in cpus:
        mask |= 1 << c
    if mask == 0:
        return "0"
    groups = []
    while mask:
        groups.append(f"{mask & 0xFFFFFFFF:08x}")
        mask >>= 32
    return ",".join(reversed(groups))


def parse_cpumask(text: str) -> list[int]:
    """'00000001,00000003' or 'ff' -> CPU list (inverse of cpumask_hex)."""
    value = int(text.strip().replace(",", "") or "0", 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


@dataclass(frozen=True)
class Cpu:
    cpu: int
    package: int
    core: int
    node: int
    siblings: tuple


@dataclass
class Topology:
    cpus: list                      # [Cpu]
    nodes: dict                     # node -> [cpu]
    nic: str = ""
    nic_node: int = -1

    @property
    def physical_cores(self) -> list[tuple]:
        """Sorted sibling groups (one tuple of CPUs per physical core), ordered by first CPU."""
        return sorted({c.siblings for c in self.cpus})

    def node_of(self, cpu: int) -> int:
        for c in self.cpus:
            if c.cpu == cpu:
                return c.node
        return 0


def _read(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        if default is None:
            raise
        return default


def read_topology(root: str | os.PathLike = "/", nic: str = "") -> Topology:
    """Read CPUs, SMT siblings, NUMA nodes and the NIC's node from ``root``/sys."""
    rootp = Path(root)
    cpudir = rootp / "sys/devices/system/cpu"
    online_text = _read(cpudir / "online", "")
    if not online_text:
        found = sorted(int(p.name[3:]) for p in cpudir.glob("cpu[0-9]*") if p.name[3:].isdigit())
        if not found:
            raise TopologyError(f"no CPUs under {cpudir} (is /sys mounted in the target?)")
        online = found
    else:
        online = parse_cpulist(online_text)
    nodes: dict[int, list[int]] = {}
    nodedir = rootp / "sys/devices/system/node"
    for p in sorted(nodedir.glob("node[0-9]*")):
        if p.name[4:].isdigit():
            nodes[int(p.name[4:])] = [c for c in parse_cpulist(_read(p / "cpulist", "")) if c in online]
    if not nodes:
        nodes = {0: list(online)}
    cpu_node = {c: n for n, cs in nodes.items() for c in cs}
    cpus = []
    for c in online:
        top = cpudir / f"cpu{c}/topology"
        sib_text = _read(top / "core_cpus_list", "") or _read(top / "thread_siblings_list", "")
        siblings = tuple(s for s in parse_cpulist(sib_text) if s in online) or (c,)
        cpus.append(Cpu(cpu=c, package=int(_read(top / "physical_package_id", "0")),
                        core=int(_read(top / "core_id", str(c))), node=cpu_node.get(c, 0),
                        siblings=siblings))
    nic_node = -1
    if nic:
        netdir = rootp / "sys/class/net" / nic
        if not netdir.exists():
            raise TopologyError(f"NIC {nic!r} not found under {netdir.parent}")
        nic_node = int(_read(netdir / "device/numa_node", "-1"))
        if nic_node not in nodes:
            nic_node = -1
    return Topology(cpus=cpus, nodes=nodes, nic=nic, nic_node=nic_node)


@dataclass
class CorePlan:
    cpus: list
    housekeeping: list
    isolated: list                  # actor cores plus their idle SMT siblings
    idle_siblings: list
    actors: dict                    # actor -> cpu
    nodes: dict                     # node -> [cpu]
    nic: str = ""
    nic_node: int = -1
    degraded: bool = False
    notes: list = field(default_factory=list)

    @property
    def kernel_args(self) -> dict:
        """The kernel command-line parameters this plan implies ({} when degraded)."""
        if not self.isolated:
            return {}
        iso = format_cpulist(self.isolated)
        return {"isolcpus": f"managed_irq,domain,{iso}", "nohz_full": iso, "rcu_nocbs": iso,
                "irqaffinity": format_cpulist(self.housekeeping)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nodes"] = {str(k): v for k, v in self.nodes.items()}
        d["housekeeping_list"] = format_cpulist(self.housekeeping)
        d["housekeeping_mask"] = cpumask_hex(self.housekeeping)
        d["isolated_list"] = format_cpulist(self.isolated)
        d["kernel_args"] = self.kernel_args
        return d


def _actor_rank(name: str) -> tuple:
    for i, prefix in enumerate(ACTOR_ORDER):
        if name == prefix or name.startswith(prefix):
            return (i, name)
    return (len(ACTOR_ORDER), name)


def make_plan(topo: Topology, actors, housekeeping_cores_per_node: int = 1) -> CorePlan:
    """Assign one whole physical core per actor; see the module docstring for the rules."""
    actors = sorted(dict.fromkeys(actors), key=_actor_rank)
    if housekeeping_cores_per_node < 1:
        raise ValueError("housekeeping_cores_per_node must be >= 1")
    notes: list[str] = []
    cores = topo.physical_cores
    by_node: dict[int, list[tuple]] = {}
    for core in cores:
        by_node.setdefault(topo.node_of(core[0]), []).append(core)
    hk_cores: list[tuple] = []
    for node in sorted(by_node):
        hk_cores.extend(by_node[node][:housekeeping_cores_per_node])
    free = [c for c in cores if c not in hk_cores]
    all_cpus = sorted(c.cpu for c in topo.cpus)
    if len(free) < len(actors) or not actors:
        why = ("no actors configured" if not actors else
               f"{len(cores)} physical cores < {len(hk_cores)} housekeeping + {len(actors)} actors")
        notes.append(f"degraded: {why}; nothing isolated, actors share the housekeeping CPUs "
                     "and must use a yielding wait strategy")
        # spread actors round-robin over all CPUs so they at least do not all share CPU 0
        assign = {a: all_cpus[i % len(all_cpus)] for i, a in enumerate(actors)}
        return CorePlan(cpus=all_cpus, housekeeping=all_cpus, isolated=[], idle_siblings=[],
                        actors=assign, nodes=topo.nodes, nic=topo.nic, nic_node=topo.nic_node,
                        degraded=True, notes=notes)
    node_order = sorted(by_node)
    if topo.nic_node >= 0:
        node_order.remove(topo.nic_node)
        node_order.insert(0, topo.nic_node)
        notes.append(f"NIC {topo.nic} is on NUMA node {topo.nic_node}: its cores are used first")
    elif topo.nic:
        notes.append(f"NIC {topo.nic}: NUMA node unknown, nodes used in order")
    ordered_free = [c for n in node_order for c in free if topo.node_of(c[0]) == n]
    assign: dict[str, int] = {}
    used: list[tuple] = []
    for actor, core in zip(actors, ordered_free):
        assign[actor] = core[0]
        used.append(core)
    spare = [c for c in free if c not in used]
    if spare:
        notes.append(f"{len(spare)} spare physical core(s) given to housekeeping")
    housekeeping = sorted(cpu for core in hk_cores + spare for cpu in core)
    isolated = sorted(cpu for core in used for cpu in core)
    idle = sorted(cpu for core in used for cpu in core[1:])
    if idle:
        notes.append(f"SMT siblings of actor cores left idle: {format_cpulist(idle)}")
    return CorePlan(cpus=all_cpus, housekeeping=housekeeping, isolated=isolated, idle_siblings=idle,
                    actors=assign, nodes=topo.nodes, nic=topo.nic, nic_node=topo.nic_node,
                    degraded=False, notes=notes)


def actors_from_config(cfg) -> list[str]:
    """md.<venue> per enabled venue, engine, fix.<session> per FIX session, recorder."""
    actors = [f"md.{v.name}" for v in cfg.venues if v.enabled]
    actors.append("engine")
    actors.extend(f"fix.{s}" for s in fix_sessions(cfg.extra.get("fix", {})))
    actors.append("recorder")
    return actors


def fix_sessions(fix: dict) -> list[str]:
    """Session names from the [fix] table: [[fix.sessions]] with ``name`` or [fix.sessions.NAME]."""
    sessions = fix.get("sessions", []) if isinstance(fix, dict) else []
    if isinstance(sessions, dict):
        return [k for k, v in sessions.items() if not isinstance(v, dict) or v.get("enabled", True)]
    names = []
    for i, s in enumerate(sessions):
        if not isinstance(s, dict) or not s.get("name"):
            raise ValueError(f"fix.sessions[{i}].name: required")
        if s.get("enabled", True):
            names.append(str(s["name"]))
    return names


def format_plan(plan: CorePlan) -> str:
    lines = [f"CPUs:          {format_cpulist(plan.cpus)}",
             f"housekeeping:  {format_cpulist(plan.housekeeping)}  (mask {cpumask_hex(plan.housekeeping)})",
             f"isolated:      {format_cpulist(plan.isolated) or '-'}",
             f"idle siblings: {format_cpulist(plan.idle_siblings) or '-'}",
             f"NIC:           {plan.nic or '-'} (NUMA node {plan.nic_node})", "actors:"]
    lines += [f"  {a:<24} cpu {c}" for a, c in plan.actors.items()]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compute the appliance core plan from this host's topology")
    p.add_argument("--root", default="/", help="root of the /sys tree (default /)")
    p.add_argument("--nic", default="", help="the trading NIC (its NUMA node is preferred)")
    p.add_argument("--actor", action="append", default=[], help="actor name (repeat)")
    p.add_argument("--housekeeping-per-node", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        plan = make_plan(read_topology(a.root, a.nic), a.actor, a.housekeeping_per_node)
    except (TopologyError, ValueError) as e:
        print(f"coreplan: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict(), sort_keys=True) if a.json else format_plan(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
