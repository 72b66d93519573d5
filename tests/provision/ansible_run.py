"""Run ansible-playbook against a target and read the PLAY RECAP (helpers for tests/provision)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "provision"

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def snapshot_repo(dest: Path) -> Path:
    """Copy what the playbook reads from the repository into DEST (a stable snapshot: colleagues edit the
    shared tree while the test runs, and a changed source archive is a real change)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info")
    for name in ("appliance", "tuning", "benches", "systemd", "provision"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def playbook(args: list[str], cwd: Path = PROVISION, env: dict | None = None, timeout: int = 900):
    """ansible-playbook ARGS in CWD; returns (CompletedProcess, {host: recap dict})."""
    e = dict(os.environ)
    e.update({"ANSIBLE_CONFIG": str(cwd / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
              "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_STDOUT_CALLBACK": "default"})
    e.update(env or {})
    r = subprocess.run(["ansible-playbook", *args], cwd=cwd, env=e, capture_output=True, text=True,
                       timeout=timeout)
    recap = {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
             for m in RECAP.findall(r.stdout)}
    return r, recap


def changed_tasks(stdout: str) -> list[str]:
    """Names of the tasks that reported 'changed' (for a readable idempotence failure)."""
    out, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:") and task:
            out.append(task)
    return out
