"""provision/: syntax, lint, the reproducible source pack, and the runtime-safe knobs applied for
real to this machine (then restored)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provision.ansible_run import PROVISION, REPO, changed_tasks, playbook

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                                reason="ansible-playbook not installed (pip install ansible)")


def test_site_playbook_passes_syntax_check_with_example_inventory():
    r, _ = playbook(["--syntax-check", "-i", "inventory/example/hosts.yml", "site.yml"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_inventory_defines_a_fleet_with_per_host_nics():
    r = subprocess.run(["ansible-inventory", "-i", "inventory/example/hosts.yml", "--list"],
                       cwd=PROVISION, capture_output=True, text=True, check=True)
    inv = json.loads(r.stdout)
    hosts = inv["_meta"]["hostvars"]
    assert len(hosts) >= 3
    assert all(h.get("nic_name") for h in hosts.values())
    assert hosts["ld4-trade-01.example.net"]["timesync_ptp"] is True
    assert hosts["ty3-trade-01.example.net"]["irq_irqbalance_mode"] == "ban"


@pytest.mark.skipif(shutil.which("ansible-lint") is None, reason="ansible-lint not installed")
def test_ansible_lint_production_profile_is_clean():
    r = subprocess.run(["ansible-lint", "--offline", "--profile", "production", "--nocolor", "provision/"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_pack_source_is_byte_reproducible_and_skips_caches(tmp_path):
    pack = PROVISION / "roles/appliance/files/pack_source.py"
    repo = tmp_path / "repo"
    (repo / "appliance/__pycache__").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname='x'\n")
    (repo / "appliance/__init__.py").write_text("")
    (repo / "appliance/__pycache__/x.pyc").write_bytes(b"junk")
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    subprocess.run([sys.executable, pack, repo, a], check=True)
    (repo / "appliance/__init__.py").touch()      # new mtime, same content
    subprocess.run([sys.executable, pack, repo, b], check=True)
    assert a.read_bytes() == b.read_bytes()
    import tarfile
    names = tarfile.open(a).getnames()
    assert "appliance-src/appliance/__init__.py" in names
    assert not any("__pycache__" in n for n in names)


def test_pack_source_rejects_a_directory_without_pyproject(tmp_path):
    pack = PROVISION / "roles/appliance/files/pack_source.py"
    r = subprocess.run([sys.executable, pack, tmp_path, tmp_path / "x.tar.gz"], capture_output=True, text=True)
    assert r.returncode == 2 and "pyproject.toml" in r.stderr


# -- runtime knobs, for real, on this machine ---------------------------------------------------

SYSCTLS = ("vm.swappiness", "vm.stat_interval", "kernel.timer_migration", "net.core.busy_poll",
           "net.core.busy_read", "kernel.watchdog")
THP = ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/mm/transparent_hugepage/defrag")


def _proc_sys(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _selected(path: str) -> str:
    text = Path(path).read_text()
    return text[text.index("[") + 1:text.index("]")]


def _hugepage_files() -> list[Path]:
    nodes = sorted(Path("/sys/devices/system/node").glob("node[0-9]*/hugepages/hugepages-2048kB/nr_hugepages"))
    return nodes or [Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")]


@pytest.fixture
def restore_runtime_knobs():
    """Record the sysctls, THP modes and 2 MiB reservation this test changes; put them back."""
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root to change sysctls, THP and huge pages on this machine")
    saved_sysctl = {k: _proc_sys(k).read_text() for k in SYSCTLS if _proc_sys(k).exists()}
    saved_thp = {p: _selected(p) for p in THP if Path(p).exists()}
    saved_pages = {p: p.read_text() for p in _hugepage_files() if p.exists()}
    yield saved_sysctl, saved_thp, saved_pages
    for k, v in saved_sysctl.items():
        _proc_sys(k).write_text(v)
    for p, v in saved_thp.items():
        Path(p).write_text(v)
    for p, v in saved_pages.items():
        p.write_text(v)


def test_runtime_knobs_applied_to_this_machine_idempotently_then_restored(tmp_path, restore_runtime_knobs):
    saved_sysctl, saved_thp, saved_pages = restore_runtime_knobs
    per_node = max(int(v) for v in saved_pages.values()) + 4     # a change we can observe, 8 MiB more
    play = tmp_path / "live.yml"
    play.write_text(f"""---
- name: Runtime-safe knobs on the test machine
  hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: [min]
  vars:
    appliance_repo_root: {REPO}
    appliance_target_is_image: false
    hugepages_mount: false
    hugepages_2m_per_node: {per_node}
    hugepages_sysctl_file: {tmp_path}/hugepages.conf
    sysctl_file: {tmp_path}/sysctl.conf
    sysctl_numa_balancing: false
    sysctl_workqueue_cpumask: false
    sysctl_values:
      vm.swappiness: "7"
      vm.stat_interval: "9"
      kernel.numa_balancing: "0"
      kernel.timer_migration: "0"
      net.core.busy_poll: "50"
      net.core.busy_read: "50"
      kernel.watchdog: "0"
      kernel.nmi_watchdog: "0"
  roles:
    - coreplan
    - hugepages
    - sysctl
""")
    env = {"ANSIBLE_ROLES_PATH": str(PROVISION / "roles"), "ANSIBLE_LIBRARY": str(PROVISION / "library")}
    inv = ["-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}"]
    r, recap = playbook([*inv, str(play)], env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert recap["localhost"]["changed"] > 0
    assert _proc_sys("vm.swappiness").read_text().strip() == "7"
    assert _proc_sys("vm.stat_interval").read_text().strip() == "9"
    assert all(_selected(p) == "never" for p in saved_thp)
    assert all(int(p.read_text()) == per_node for p in saved_pages), "2 MiB pages not reserved per node"
    assert "vm.swappiness=7" in (tmp_path / "sysctl.conf").read_text().replace(" ", "")
    assert f"vm.nr_hugepages = {per_node * len(saved_pages)}" in (tmp_path / "hugepages.conf").read_text()

    r2, recap2 = playbook([*inv, str(play)], env=env)
    assert r2.returncode == 0, r2.stdout[-6000:]
    assert recap2["localhost"]["changed"] == 0, changed_tasks(r2.stdout)

    # the audit reads the same knobs back as passing on the live host
    from tuning import audit
    e = audit.expected_for("/")
    e.values["sysctl_values"] = {**e.values["sysctl_values"], "vm.swappiness": "7", "vm.stat_interval": "9"}
    e.values["hugepages_2m_per_node"] = per_node
    by_id = {c.id: c for c in audit.audit("/", e)}
    for kid in ("T-2.1", "T-5.1", "T-5.3", "T-5.4", "T-5.5", "T-5.7"):
        assert by_id[kid].status == "pass", by_id[kid]


# -- a host without grub tooling: this machine, in check mode ----------------------------------

def _localhost_inventory(tmp_path, **hostvars) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"all": {"children": {"trading": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "appliance_pack_dir": str(tmp_path / "pack"), **hostvars}}}}}}))
    return inv


@pytest.fixture
def no_grub_here():
    import os
    if os.geteuid() != 0:
        pytest.skip("check mode of the whole playbook reads root-only files")
    if Path("/usr/sbin/update-grub").exists():
        pytest.skip("this machine has grub tooling")


def test_check_mode_on_a_host_without_grub_skips_the_kernel_command_line_and_says_why(tmp_path, no_grub_here):
    r, recap = playbook(["-i", str(_localhost_inventory(tmp_path)), "site.yml", "--check"])
    assert r.returncode == 0 and recap["localhost"]["failed"] == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "T-1.x SKIPPED on localhost: /usr/sbin/update-grub not found" in r.stdout
    assert "Kernel parameters in the grub drop-in" not in r.stdout
    # the other roles ran
    assert "TASK [sysctl : T-5.1 T-5.2 T-5.3 T-5.4 T-5.5 | Set the sysctls now" in r.stdout
    assert "TASK [appliance : T-8.2 | Config]" in r.stdout


def test_check_mode_with_the_kernel_command_line_switched_off_runs_no_preflight_for_it(tmp_path, no_grub_here):
    inv = _localhost_inventory(tmp_path, kernel_cmdline_enabled=False)
    r, recap = playbook(["-i", str(inv), "site.yml", "--check"])
    assert r.returncode == 0 and recap["localhost"]["failed"] == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "kernel_cmdline_enabled is false: T-1.x not applied" in r.stdout
    assert "T-1.x SKIPPED" not in r.stdout
    assert not re.search(r"TASK \[kernel_cmdline : T-1\.0 \| Preflight.*\]\s*\n(ok|fatal)", r.stdout)
