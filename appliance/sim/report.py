"""What a run did, from its journal: per instrument orders, acks, fills, position and PnL, plus the
checks a run must pass (every order answered, nothing new after the kill).

The journal is the record of truth here: it holds every record the engine sent (``orders``) and
every answer the FIX gateways published (``exec*`` rings), byte for byte, so this report does not
depend on any actor's own counters (and cross-checks them).
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np

from appliance.transport import records as R

ORDER_KINDS = (R.RT_NEW_ORDER, R.RT_REPLACE, R.RT_CANCEL)


def _view(rows: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Records of kind ``dt`` (its itemsize = the rows' record size)."""
    return np.ascontiguousarray(rows).view(dt)[:, 0]


def _hdr(rows: np.ndarray) -> np.ndarray:
    from appliance.journal import record_view
    return record_view(rows)


def _read(journal, prefix: str) -> np.ndarray | None:
    parts = [journal.read_all(r) for r in journal.rings() if r == prefix or r.startswith(prefix + ".")]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else None


def trading_report(journal_dir, cfg, kill_tsc: int = 0) -> dict:
    """Per-instrument activity and the run's checks from the journal in ``journal_dir``.

    ``kill_tsc``: the TSC at which the kill switch was set (0: no kill): order records published
    after it other than cancels are reported in ``orders_after_kill``."""
    from appliance.journal import Journal
    j = Journal([str(journal_dir)])
    names = {(R.VENUE_IDS[i.venue], i.id): i for i in cfg.instruments}
    per: dict[str, dict] = {}

    def row(venue: int, instr: int) -> dict:
        ins = names.get((int(venue), int(instr)))
        key = ins.key if ins else f"{R.VENUE_NAMES.get(int(venue), venue)}:#{instr}"
        if key not in per:
            per[key] = {"orders": 0, "new": 0, "replace": 0, "cancel": 0, "acks": 0, "fills": 0,
                        "rejects": 0, "filled_lots": 0, "position_lots": 0, "cash_tl": 0,
                        "fees_e8": 0, "mid": None, "_ins": ins}
        return per[key]

    sent: dict[int, int] = {}          # clord_id -> publish_tsc of the request
    where: dict[int, tuple] = {}       # clord_id -> (venue, instrument) of the request
    after_kill = 0
    orders = _read(j, "orders")
    if orders is not None:
        hdr = _hdr(orders)
        for k in np.nonzero(np.isin(hdr["rtype"], ORDER_KINDS))[0]:
            h = hdr[k]
            r = row(h["venue"], h["instrument"])
            kind = {R.RT_NEW_ORDER: "new", R.RT_REPLACE: "replace", R.RT_CANCEL: "cancel"}[int(h["rtype"])]
            r[kind] += 1
            r["orders"] += 1
            o = _view(orders[k:k + 1], R.CANCEL)[0]     # clord ids share offsets in the family
            clord = int(o["clord_id"])
            sent[clord] = int(h["publish_tsc"])
            where[clord] = (int(h["venue"]), int(h["instrument"]))
            if kind != "new":
                where.setdefault(int(o["orig_clord_id"]), where[clord])
            if kill_tsc and int(h["publish_tsc"]) > kill_tsc and kind != "cancel":
                after_kill += 1
    answered: set[int] = set()
    execs = _read(j, "exec")
    if execs is not None:
        hdr = _hdr(execs)
        for k in range(len(hdr)):
            rt = int(hdr[k]["rtype"])
            if rt not in (R.RT_ACK, R.RT_FILL, R.RT_REJECT):
                continue
            a = _view(execs[k:k + 1], R.ACK)[0]         # clord ids share offsets in the family
            answered.add(int(a["clord_id"]))
            answered.add(int(a["orig_clord_id"]))
            venue, instr = int(hdr[k]["venue"]), int(hdr[k]["instrument"])
            if (venue, instr) not in names:             # e.g. a cancel reject without Symbol
                venue, instr = where.get(int(a["orig_clord_id"]),
                                         where.get(int(a["clord_id"]), (venue, instr)))
            r = row(venue, instr)
            if rt == R.RT_ACK:
                r["acks"] += 1
            elif rt == R.RT_REJECT:
                r["rejects"] += 1
            else:
                f = _view(execs[k:k + 1], R.FILL)[0]
                q, px = int(f["last_qty"]), int(f["last_price"])
                sign = 1 if int(f["side"]) == R.SIDE_BUY else -1
                r["fills"] += 1
                r["filled_lots"] += q
                r["position_lots"] += sign * q
                r["cash_tl"] -= sign * q * px
                r["fees_e8"] += int(f["fee"])
    md = _read(j, "md")
    if md is not None:
        hdr = _hdr(md)
        idx = np.nonzero(hdr["rtype"] == R.RT_BATCH_END)[0]
        be = _view(md[idx], R.BATCH_END)
        mids = {}
        for e in be:                      # last valid two-sided top per book
            if e["bid_price"] > 0 and e["ask_price"] > 0:
                mids[(int(e["venue"]), int(e["instrument"]))] = (int(e["bid_price"]) + int(e["ask_price"])) // 2
        for (v, i), mid in mids.items():
            if (v, i) in names and names[(v, i)].key in per:
                per[names[(v, i)].key]["mid"] = mid
    for r in per.values():
        ins = r.pop("_ins")
        r["pnl"] = None
        if ins is not None and (r["mid"] is not None or r["position_lots"] == 0):
            tick, lot = Decimal(ins.tick), Decimal(ins.lot)
            value_tl = r["cash_tl"] + r["position_lots"] * (r["mid"] or 0)
            r["position"] = f"{(r['position_lots'] * lot).normalize():f}"
            r["pnl"] = float(value_tl * tick * lot - Decimal(r["fees_e8"]) / 10**8)
            r["quote"] = ins.quote
    unanswered = sorted(c for c in sent if c not in answered)
    return {"instruments": per, "orders": sum(r["orders"] for r in per.values()),
            "acks": sum(r["acks"] for r in per.values()),
            "fills": sum(r["fills"] for r in per.values()),
            "rejects": sum(r["rejects"] for r in per.values()),
            "unanswered": len(unanswered), "unanswered_clord_ids": unanswered[:20],
            "orders_after_kill": after_kill,
            "journal_gaps": sum(len(j.gaps(r)) for r in j.rings())}
