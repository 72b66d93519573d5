"""provision/site.yml against a booted Debian host: a QEMU virtual machine (full-system emulation,
BIOS + grub on a partitioned disk, systemd as PID 1), provisioned over ssh with a real inventory,
then rebooted through its boot loader so the kernel parses the command line the role wrote.

What the rebooted guest must show: the core plan's isolcpus / nohz_full / rcu_nocbs / irqaffinity
on /proc/cmdline and in effect, huge pages reserved at boot and hugetlbfs mounted for the
appliance group, THP never, the sysctls, irqbalance stopped and disabled, and
`appliance tuning check --json` passing every knob that applies to this guest (the others n/a,
each with its reason). A second run of the playbook after the reboot changes nothing.

Slow (TCG emulation, two boots, two playbook runs; ~10-15 min on a 2-core machine). Needs root,
debootstrap, mkfs.ext4, sfdisk, qemu-system-x86_64, ssh and a Debian mirror.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

import pytest
import yaml

from tests.provision import guest
from tests.provision.ansible_run import changed_tasks, playbook, snapshot_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

PAGES_2M = 64             # per NUMA node (the guest has one): 128 MiB
PAGES_1G = 1              # -cpu max has pdpe1gb
SYSCTLS = {"vm.swappiness": "10", "vm.stat_interval": "10", "kernel.timer_migration": "0",
           "net.core.busy_poll": "50", "net.core.busy_read": "50", "kernel.watchdog": "0",
           "kernel.nmi_watchdog": "0", "kernel.numa_balancing": "0"}
# Knobs that cannot apply to this guest, and the reason the audit must give for each
NOT_APPLICABLE = {
    "T-1.11": "switched off",            # mitigations=off is off by default
    "T-3.1": "no cpufreq",               # an emulated CPU has no frequency driver
    "T-3.2": "energy_performance_preference",
    "T-4.4": "no NIC named",             # the guest's user-mode NIC is not a trading NIC
    "T-4.5": "no NIC named",
    "T-6.1": "no NIC named",
    "T-6.2": "no NIC named",
    "T-7.2": "switched off",             # no PTP hardware
    "T-7.3": "switched off",             # TCG has no invariant TSC (CPUID 80000007H:EDX.invtsc)
}

# Everything the tests look at, read inside the guest in one go right after the reboot
PROBE = r"""
import glob, json, os, subprocess
def read(p):
    try:
        return open(p).read().strip()
    except OSError:
        return None
def sh(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    return {"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr.strip()}
out = {
  "cmdline": read("/proc/cmdline"),
  "isolated": read("/sys/devices/system/cpu/isolated"),
  "nohz_full": read("/sys/devices/system/cpu/nohz_full"),
  "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
  "pages_2m": {p.split("/")[5]: int(read(p)) for p in
               glob.glob("/sys/devices/system/node/node*/hugepages/hugepages-2048kB/nr_hugepages")},
  "pages_1g": read("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"),
  "mounts": [l.split() for l in open("/proc/mounts") if " /var/lib/appliance/hugepages " in l],
  "appliance_gid": next((l.split(":")[2] for l in open("/etc/group") if l.startswith("appliance:")), None),
  "thp": {k: read("/sys/kernel/mm/transparent_hugepage/" + k) for k in ("enabled", "defrag")},
  "sysctl": {k: read("/proc/sys/" + k.replace(".", "/")) for k in SYSCTLS},
  "enabled_units": {u: sh("systemctl", "is-enabled", u)["out"] for u in (
      "appliance-engine.service", "appliance-recorder.service", "appliance-md@binance.service",
      "appliance-exporter.service", "appliance-cstate.service")},
  "irqbalance": {"active": sh("systemctl", "is-active", "irqbalance")["out"],
                 "enabled": sh("systemctl", "is-enabled", "irqbalance")["out"],
                 "running": any(read(p) == "irqbalance" for p in glob.glob("/proc/[0-9]*/comm"))},
  "default_smp_affinity": read("/proc/irq/default_smp_affinity"),
  "check": sh("/opt/appliance/venv/bin/appliance", "tuning", "check", "--json"),
  "plan": json.load(open("/etc/appliance/tuning.json"))["plan"],
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("building and booting a VM image needs root")
    missing = guest.missing_tools("debootstrap", "mkfs.ext4", "sfdisk", "qemu-system-x86_64", "ssh",
                                  "ssh-keygen", "ansible-playbook")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install qemu-system-x86 debootstrap "
                    "fdisk openssh-client)")
    timings = {}
    t = time.monotonic()
    tree = guest.session_tree(tmp_path_factory)
    timings["debootstrap (once per session)"] = time.monotonic() - t
    work = tmp_path_factory.mktemp("booted-host")
    machine = guest.QemuVm(work / "vm", tree, guest.ssh_key(work), cpus=4, memory_mb=3072)
    machine.timings = timings
    try:
        with _timed(timings, "disk image"):
            machine.build()
        with _timed(timings, "first boot (QEMU loads the kernel)"):
            machine.boot(direct=True)
        with _timed(timings, "grub-install"):
            machine.install_bootloader()
        yield machine
    except guest.GuestError as e:
        pytest.fail(f"{e}\n--- serial console (tail)\n{machine.serial_log()[-4000:]}")
    finally:
        machine.kill()
        print("booted-host timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        # the consoles outlive the disk image: pytest keeps its last basetemps
        logs = tmp_path_factory.getbasetemp() / "booted-host-consoles"
        logs.mkdir(exist_ok=True)
        for f in (work / "vm").glob("serial-*.log"):
            shutil.copy(f, logs / f.name)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _timed(timings: dict, what: str):
    t = time.monotonic()
    try:
        yield
    finally:
        timings[what] = time.monotonic() - t


@pytest.fixture(scope="module")
def booted(vm, tmp_path_factory):
    """Provision, reboot through grub, read the guest, provision again."""
    work = tmp_path_factory.mktemp("booted-host-run")
    repo = snapshot_repo(work / "repo")
    wheels = guest.session_wheelhouse(tmp_path_factory)
    timings = vm.timings
    with guest.http_server(wheels) as port:
        inventory = work / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": {"trading": {"hosts": {"trade-vm": {
            **vm.ssh.inventory_vars(),
            "appliance_pack_dir": str(work / "pack"),
            # QEMU's user network: the host is 10.0.2.2; pip installs from the test's wheelhouse there
            "appliance_requirements": guest.requirements(),
            # `appliance compile` under TCG would take most of an hour; the nspawn test runs it
            "appliance_compile": False,
            "appliance_pip_env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"http://10.0.2.2:{port}/",
                                  "PIP_TRUSTED_HOST": "10.0.2.2"},
            "hugepages_2m_per_node": PAGES_2M,
            "kernel_cmdline_hugepages_1g_count": PAGES_1G,
            "kernel_cmdline_reboot_allowed": False,        # the test reboots, through grub
            "timesync_clocksource_tsc": False,             # TCG cannot offer an invariant TSC
        }}}}}}))

        env = {**guest.mitogen_env(tmp_path_factory.getbasetemp() / "mitogen"),
               "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}

        def run():
            return playbook(["-i", str(inventory), "site.yml"], cwd=repo / "provision", env=env,
                            timeout=2400)

        # The appliance itself runs under systemd in tests/systemd/test_appliance_target.py. Here
        # its enabled units would start at boot and compile every hot path under TCG (no
        # `appliance compile` ran) through the rest of the test: the test's own drop-ins (the
        # role writes only its 50-cores.conf there) make systemd skip them on a condition, which
        # leaves what the role installed and enabled as it is.
        hold = "[Unit]\\nConditionPathExists=/etc/appliance/start-in-tests\\n"
        vm.ssh.run(" && ".join(
            f"mkdir -p /etc/systemd/system/{u}.d && printf '{hold}' > /etc/systemd/system/{u}.d/10-tests.conf"
            for u in ("appliance-engine.service", "appliance-recorder.service", "appliance-md@.service",
                      "appliance-fix@.service", "appliance-exporter.service")), check=True)
        try:
            with _timed(timings, "first playbook run"):
                first, first_recap = run()
            assert first.returncode == 0, first.stdout[-10000:] + first.stderr[-3000:]
            with _timed(timings, "power-off"):
                vm.shutdown()
            with _timed(timings, "second boot (BIOS, grub)"):
                vm.boot()
        except guest.GuestError as e:
            pytest.fail(f"{e}\n--- serial console (tail)\n{vm.serial_log()[-4000:]}")
        probe = vm.ssh.run("python3 -", input=f"SYSCTLS = {SYSCTLS!r}\n{PROBE}", timeout=300)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        state = json.loads(probe.stdout)
        with _timed(timings, "second playbook run"):
            second, second_recap = run()
    return {"first": first, "first_recap": first_recap["trade-vm"], "state": state, "second": second,
            "second_recap": second_recap.get("trade-vm"), "serial": vm.serial_log()}


def test_first_run_provisions_the_host_and_asks_for_a_reboot(booted):
    assert booted["first_recap"]["failed"] == 0 and booted["first_recap"]["changed"] > 0
    out = booted["first"].stdout
    assert "REBOOT REQUIRED on trade-vm" in out
    assert "DEGRADED" not in out and "T-1.x SKIPPED" not in out


def test_the_guest_boots_through_grub_with_the_core_plan_on_the_kernel_command_line(booted):
    st = booted["state"]
    plan, cmdline = st["plan"], st["cmdline"].split()
    assert cmdline[0].startswith("BOOT_IMAGE="), "booted by grub, not by QEMU's -kernel"
    assert not plan["degraded"] and plan["isolated_list"] == "1-3" and plan["housekeeping_list"] == "0"
    for param in (f"isolcpus=managed_irq,domain,{plan['isolated_list']}", f"nohz_full={plan['isolated_list']}",
                  f"rcu_nocbs={plan['isolated_list']}", f"irqaffinity={plan['housekeeping_list']}",
                  "skew_tick=1", "tsc=reliable", "nosoftlockup", "transparent_hugepage=never",
                  "hugepagesz=1G", f"hugepages={PAGES_1G}"):
        assert param in cmdline, (param, cmdline)
    # and the kernel acted on them
    assert st["isolated"] == plan["isolated_list"]
    assert st["nohz_full"] == plan["isolated_list"]
    assert st["clocksource"] == "tsc", "tsc=reliable keeps the TSC as clocksource"
    assert int(st["default_smp_affinity"], 16) == 1 << plan["housekeeping"][0]


def test_huge_pages_are_reserved_at_boot_and_hugetlbfs_is_mounted_for_the_appliance_group(booted):
    st = booted["state"]
    assert st["pages_2m"] and all(n == PAGES_2M for n in st["pages_2m"].values()), st["pages_2m"]
    assert st["pages_1g"] == str(PAGES_1G)
    assert len(st["mounts"]) == 1, st["mounts"]
    _what, where, fstype, opts, *_ = st["mounts"][0]
    opts = opts.split(",")
    assert fstype == "hugetlbfs" and where == "/var/lib/appliance/hugepages"
    assert "pagesize=2M" in opts and f"gid={st['appliance_gid']}" in opts and "mode=770" in opts


def test_transparent_huge_pages_are_never_and_the_sysctls_are_applied_at_boot(booted):
    st = booted["state"]
    assert "[never]" in st["thp"]["enabled"] and "[never]" in st["thp"]["defrag"]
    assert st["sysctl"] == SYSCTLS


def test_irqbalance_is_stopped_and_stays_disabled_across_the_reboot(booted):
    irq = booted["state"]["irqbalance"]
    assert irq == {"active": "inactive", "enabled": "disabled", "running": False}


def test_tuning_check_passes_every_knob_that_applies_to_the_guest(booted):
    check = booted["state"]["check"]
    assert check["err"] == "", check["err"]
    report = json.loads(check["out"])
    by_id = {c["id"]: c for c in report["checks"]}
    failed = {i: c for i, c in by_id.items() if c["status"] == "fail"}
    assert not failed and report["ok"] and check["rc"] == 0, failed
    na = {i: c["actual"] for i, c in by_id.items() if c["status"] == "n/a"}
    assert set(na) == set(NOT_APPLICABLE), na
    for kid, why in NOT_APPLICABLE.items():
        assert why in na[kid], (kid, na[kid])
    for kid in ("T-1.1", "T-1.2", "T-1.3", "T-1.4", "T-1.10", "T-2.1", "T-2.2", "T-3.3", "T-4.1", "T-4.2",
                "T-4.3", "T-5.1", "T-5.6", "T-5.7", "T-7.1", "T-8.3"):
        assert by_id[kid]["status"] == "pass", by_id[kid]


def test_the_role_enabled_the_appliance_units_and_the_exporter(booted):
    # enabled for appliance.target (held by the test's own condition, see the fixture)
    assert booted["state"]["enabled_units"] == {u: "enabled" for u in booted["state"]["enabled_units"]}


def test_second_run_after_the_reboot_changes_nothing(booted):
    r = booted["second"]
    assert r.returncode == 0, r.stdout[-6000:]
    assert booted["second_recap"]["changed"] == 0, changed_tasks(r.stdout)
    assert "REBOOT REQUIRED" not in r.stdout
