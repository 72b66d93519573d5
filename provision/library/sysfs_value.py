#!/usr/bin/python
"""Ansible module: idempotently set a value in /sys or /proc (a runtime kernel knob)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sysfs_value
short_description: Set a /sys or /proc knob at runtime, idempotently and check-mode safe
description:
  - Reads the file, compares with the wanted value in the file's own format, writes only on a
    difference. Glob patterns set every matching file.
options:
  path:
    description: File or glob pattern (e.g. /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor).
    type: str
    required: true
  value:
    description: The value to write.
    type: str
    required: true
  compare:
    description: >-
      How to read the current value. C(exact) compares stripped text; C(selected) reads the
      bracketed choice ("always [madvise] never"); C(cpumask) and C(cpulist) compare CPU sets.
    type: str
    choices: [exact, selected, cpumask, cpulist]
    default: exact
  missing:
    description: What to do when nothing matches the path.
    type: str
    choices: [fail, ignore]
    default: fail
author: appliance team
"""

EXAMPLES = r"""
- name: "T-5.7 | THP off"
  sysfs_value:
    path: /sys/kernel/mm/transparent_hugepage/enabled
    value: never
    compare: selected
"""

RETURN = r"""
changed_paths:
  description: Files whose value was (or in check mode would be) changed.
  type: list
  returned: always
failed_paths:
  description: Files the kernel refused to change (path and error), e.g. per-CPU IRQs.
  type: list
  returned: always
"""

import glob
import re

from ansible.module_utils.basic import AnsibleModule


def cpulist(text):
    out = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cpumask(text):
    v = int(text.strip().replace(",", "") or "0", 16)
    return {i for i in range(v.bit_length()) if v >> i & 1}


def normalise(compare, text):
    if compare == "selected":
        m = re.search(r"\[([^\]]+)\]", text)
        return m.group(1) if m else text.strip()
    if compare == "cpumask":
        return cpumask(text)
    if compare == "cpulist":
        return cpulist(text)
    return " ".join(text.split())


def main():
    module = AnsibleModule(argument_spec=dict(
        path=dict(type="str", required=True),
        value=dict(type="str", required=True),
        compare=dict(type="str", default="exact", choices=["exact", "selected", "cpumask", "cpulist"]),
        missing=dict(type="str", default="fail", choices=["fail", "ignore"]),
    ), supports_check_mode=True)
    p = module.params
    paths = sorted(glob.glob(p["path"]))
    if not paths:
        if p["missing"] == "fail":
            module.fail_json(msg=f"{p['path']}: no such file on this host")
        module.exit_json(changed=False, changed_paths=[], failed_paths=[], msg="no matching file")
    want = normalise(p["compare"], p["value"])
    changed, failed = [], []
    for path in paths:
        try:
            with open(path) as f:
                current = normalise(p["compare"], f.read())
        except OSError as e:
            failed.append(f"{path}: read: {e.strerror}")
            continue
        if current == want:
            continue
        if not module.check_mode:
            try:
                with open(path, "w") as f:
                    f.write(p["value"])
            except OSError as e:
                failed.append(f"{path}: {e.strerror}")
                continue
        changed.append(path)
    if failed and p["missing"] == "fail" and not changed and len(failed) == len(paths):
        module.fail_json(msg="; ".join(failed), changed_paths=changed, failed_paths=failed)
    module.exit_json(changed=bool(changed), changed_paths=changed, failed_paths=failed)


if __name__ == "__main__":
    main()
