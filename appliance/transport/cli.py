"""``appliance shm ls``: the shared-memory regions of this host and who is using them."""
from __future__ import annotations

import json
import sys


def collect(shm_dir=None) -> dict:
    from appliance.transport import ring, shm
    d = shm.resolve_dir(shm_dir)
    regions = []
    for path in shm.list_regions(d):
        try:
            reg = shm.attach(path.name, None, d)
        except shm.ShmError as e:
            regions.append({"name": path.name, "error": str(e)})
            continue
        w = reg.words
        kind = int(w[shm.W_KIND])
        item = {
            "name": path.name, "kind": shm.KIND_NAMES.get(kind, str(kind)), "backing": reg.backing,
            "bytes": int(w[shm.W_SIZE]), "record_size": int(w[shm.W_RECORD_SIZE]),
            "capacity": int(w[shm.W_CAPACITY]), "writer_pid": int(w[shm.W_WRITER_PID]),
            "writer_alive": reg.writer_alive(), "writer_generation": int(w[shm.W_WRITER_GEN]),
            "retired": bool(w[shm.W_RETIRED]),
        }
        if kind == shm.KIND_RING:
            hdr = reg.header_view(ring.DATA_OFFSET)
            item["head"] = int(ring.head(hdr))
            item["consumers"] = ring.consumers(hdr)
            item["lapped_consumers"] = [c["name"] for c in item["consumers"] if c["lost"] > 0]
        regions.append(item)
        reg.close()
    return {"dir": str(d), "backing": "hugetlbfs" if shm.is_hugetlbfs(d) else "shm", "regions": regions}


def _ls(args) -> int:
    info = collect(args.dir)
    if args.json:
        json.dump(info, sys.stdout)
        print()
        return 0
    print(f"{info['dir']} ({info['backing']})")
    if not info["regions"]:
        print("  no regions")
        return 0
    print(f"  {'name':<20}{'kind':<8}{'backing':<11}{'rec':>5}{'capacity':>10}{'head':>14}"
          f"{'writer':>9} {'alive':<6}{'consumers (lag/lost)'}")
    for r in info["regions"]:
        if "error" in r:
            print(f"  {r['name']:<20}error: {r['error']}")
            continue
        cons = ", ".join(f"{c['name']}{'' if c['alive'] else '(dead)'} {c['lag']}/{c['lost']}"
                         for c in r.get("consumers", []))
        head = r.get("head", "")
        print(f"  {r['name']:<20}{r['kind']:<8}{r['backing']:<11}{r['record_size']:>5}{r['capacity']:>10}"
              f"{head:>14}{r['writer_pid']:>9} {'yes' if r['writer_alive'] else 'no':<6}{cons}")
        if r.get("lapped_consumers"):
            print(f"  {'':<20}lapped: {', '.join(r['lapped_consumers'])}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("shm", help="shared-memory regions")
    s = p.add_subparsers(dest="shm_command", metavar="SUBCOMMAND", required=True)
    ls = s.add_parser("ls", help="list regions: backing, writer PID and liveness, capacity, head, consumers")
    ls.add_argument("--dir", help="region directory (default: as the appliance resolves it)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_ls)
