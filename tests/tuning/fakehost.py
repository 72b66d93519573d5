"""Build fixture /proc, /sys and /etc trees of a host, tuned or untuned, for the core plan and the
audit (and for the playbook's core-plan role inside a chroot)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from tuning.coreplan import cpumask_hex, format_cpulist


def write(root: Path, rel: str, text: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text if text.endswith("\n") or text == "" else text + "\n")
    return p


def make_topology(root: Path, sockets: int = 2, cores: int = 4, threads: int = 2,
                  nic: str = "", nic_node: int = -1) -> list[int]:
    """Linux-style numbering: CPU = thread * (sockets*cores) + socket * cores + core; one NUMA
    node per socket. Returns the online CPU list."""
    n_phys = sockets * cores
    cpus = list(range(n_phys * threads))
    write(root, "sys/devices/system/cpu/online", format_cpulist(cpus))
    for cpu in cpus:
        t, rest = divmod(cpu, n_phys)
        sock, core = divmod(rest, cores)
        sibs = [th * n_phys + sock * cores + core for th in range(threads)]
        top = f"sys/devices/system/cpu/cpu{cpu}/topology"
        write(root, f"{top}/physical_package_id", str(sock))
        write(root, f"{top}/core_id", str(core))
        write(root, f"{top}/thread_siblings_list", format_cpulist(sibs))
    for sock in range(sockets):
        node_cpus = [c for c in cpus if (c % n_phys) // cores == sock]
        write(root, f"sys/devices/system/node/node{sock}/cpulist", format_cpulist(node_cpus))
    if nic:
        write(root, f"sys/class/net/{nic}/device/numa_node", str(nic_node))
    return cpus


def make_host(root: Path, plan: dict, tuned: bool, values: dict, nic: str = "") -> None:
    """Fill /proc, /sys, /etc (and /dev/cpu_dma_latency) as a tuned or an untuned host would be."""
    iso, hk = plan["isolated"], plan["housekeeping"]
    cpus = plan["cpus"]
    args = []
    if tuned:
        ka = plan["kernel_args"]
        args += [f"{k}={v}" for k, v in ka.items()]
        args += ["skew_tick=1", "tsc=reliable", "nosoftlockup", *values["kernel_cmdline_cstate_params"],
                 "transparent_hugepage=never", "hugepagesz=1G",
                 f"hugepages={values['kernel_cmdline_hugepages_1g_count']}", "hugepagesz=2M"]
    write(root, "proc/cmdline", " ".join(["BOOT_IMAGE=/vmlinuz", "root=/dev/sda1", "ro", *args]))
    write(root, "sys/devices/system/cpu/isolated", format_cpulist(iso) if tuned else "")
    write(root, "sys/devices/system/cpu/nohz_full", format_cpulist(iso) if tuned else "(null)")
    pages = values["hugepages_2m_per_node"] if tuned else 0
    for node in plan["nodes"]:
        write(root, f"sys/devices/system/node/node{node}/hugepages/hugepages-2048kB/nr_hugepages", str(pages))
    write(root, "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
          str(values["kernel_cmdline_hugepages_1g_count"] if tuned else 0))
    write(root, "etc/group", "root:x:0:\nappliance:x:998:\n" if tuned else "root:x:0:\n")
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/bash\n" +
          ("appliance:x:998:998::/var/lib/appliance:/usr/sbin/nologin\n" if tuned else ""))
    mounts = "proc /proc proc rw 0 0\n"
    if tuned:
        mounts += f"hugetlbfs {values['hugepages_mount_path']} hugetlbfs rw,relatime,gid=998,mode=770,pagesize=2M 0 0\n"
    write(root, "proc/mounts", mounts)
    for cpu in cpus:
        write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor",
              "performance" if tuned else "powersave")
        write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/energy_performance_preference",
              "performance" if tuned else "balance_power")
    write(root, "dev/cpu_dma_latency", struct.pack("<i", 0 if tuned else 2_000_000_000))
    procs = ["systemd", "sshd"] + (["chronyd"] if tuned else ["irqbalance"])
    for pid, comm in enumerate(procs, start=1):
        write(root, f"proc/{pid}/comm", comm)
    write(root, "proc/irq/default_smp_affinity", cpumask_hex(hk if tuned else cpus))
    for irq in (0, 1, 8, 24, 25):
        write(root, f"proc/irq/{irq}/smp_affinity_list", format_cpulist(hk if tuned else cpus))
        write(root, f"proc/irq/{irq}/effective_affinity_list", str(hk[0] if tuned or not iso else iso[-1]))
    if nic:
        from tuning.audit import nic_cpus
        near = nic_cpus(plan)      # housekeeping CPUs on the NIC's node
        for i, irq in enumerate((40, 41)):
            write(root, f"sys/class/net/{nic}/device/msi_irqs/{irq}", "msix")
            write(root, f"proc/irq/{irq}/smp_affinity_list", format_cpulist(near if tuned else cpus))
            write(root, f"proc/irq/{irq}/effective_affinity_list", str(near[0] if tuned or not iso else iso[0]))
            write(root, f"sys/class/net/{nic}/queues/rx-{i}/rps_cpus", cpumask_hex(near) if tuned else "0")
            write(root, f"sys/class/net/{nic}/queues/tx-{i}/xps_cpus", cpumask_hex(near) if tuned else "0")
    sysctl = values["sysctl_values"] if tuned else {
        "vm.swappiness": "60", "vm.stat_interval": "1", "kernel.numa_balancing": "1",
        "kernel.timer_migration": "1", "net.core.busy_poll": "0", "net.core.busy_read": "0",
        "kernel.watchdog": "1", "kernel.nmi_watchdog": "1"}
    for k, v in sysctl.items():
        write(root, "proc/sys/" + k.replace(".", "/"), v)
    write(root, "sys/devices/virtual/workqueue/cpumask", cpumask_hex(hk if tuned else cpus))
    write(root, "sys/kernel/mm/transparent_hugepage/enabled",
          "always madvise [never]" if tuned else "[always] madvise never")
    write(root, "sys/kernel/mm/transparent_hugepage/defrag",
          "always defer defer+madvise madvise [never]" if tuned else "always defer defer+madvise [madvise] never")
    write(root, "sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc" if tuned else "hpet")
    write(root, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu tsc " +
          ("constant_tsc nonstop_tsc" if tuned else "") + " rdtscp\n")


def ethtool_runner(tuned: bool):
    """A fake `ethtool` for the NIC checks (the real one needs real hardware)."""
    def run(argv):
        if argv[1] == "-c":
            return (f"Coalesce parameters for {argv[2]}:\nAdaptive RX: {'off' if tuned else 'on'}  TX: off\n"
                    f"rx-usecs: {0 if tuned else 50}\ntx-usecs: {0 if tuned else 50}\n")
        return ("Ring parameters:\nPre-set maximums:\nRX:\t\t4096\nTX:\t\t4096\n"
                f"Current hardware settings:\nRX:\t\t{4096 if tuned else 512}\nTX:\t\t{4096 if tuned else 512}\n")
    return run


def write_state(root: Path, enabled: dict, values: dict, plan: dict) -> None:
    write(root, "etc/appliance/tuning.json", json.dumps({"version": 1, "enabled": enabled,
                                                        "values": values, "plan": plan}))
