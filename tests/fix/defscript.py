"""Driver for the reference engine's FIX acceptance scripts (.def), as tests/data/fix/README.md
describes them: I/E lines send/expect messages, i/e CONNECT/DISCONNECT, optional connection
number prefix, <TIME±N> substitution, 9/10 filled in unless given, fields.fmt regex matching."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "fix"
SOH = b"\x01"
_TIME = re.compile(rb"<TIME([+-]\d+)?>")


class ScriptFailure(AssertionError):
    pass


def load_formats(path: Path = DATA / "fields.fmt") -> dict:
    fmts = {}
    for line in path.read_bytes().splitlines():
        if b"=" in line:
            tag, rx = line.split(b"=", 1)
            fmts[int(tag)] = re.compile(rx)
    return fmts


def expand_time(line: bytes, now: float) -> bytes:
    def sub(m):
        shift = int(m.group(1) or 0)
        return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(now + shift)).encode()
    return _TIME.sub(sub, line)


def complete(msg: bytes) -> bytes:
    """Fill in BodyLength (after the first field) and CheckSum unless the message gives them."""
    fields = [f for f in msg.split(SOH) if f]
    has9 = any(f.startswith(b"9=") for f in fields)
    has10 = fields and fields[-1].startswith(b"10=")
    if not has9:
        body_fields = fields[1:-1] if has10 else fields[1:]
        body = b"".join(f + SOH for f in body_fields)
        fields.insert(1, b"9=%d" % len(body))
    if not has10:
        head = b"".join(f + SOH for f in fields)
        fields.append(b"10=%03d" % (sum(head) % 256))
    return b"".join(f + SOH for f in fields)


def split(msg: bytes) -> list:
    out = []
    for f in msg.split(SOH):
        if f:
            tag, _, value = f.partition(b"=")
            out.append((int(tag), value))
    return out


def parse_script(path: Path) -> list:
    steps = []
    for raw in path.read_bytes().splitlines():
        line = raw.rstrip(b"\r")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        kind = chr(line[0])
        rest = line[1:]
        conn = 1
        m = re.match(rb"^(\d),", rest)
        if m:
            conn = int(m.group(1))
            rest = rest[m.end():]
        steps.append((kind, conn, rest))
    return steps


class Driver:
    def __init__(self, port: int, host="127.0.0.1", read_timeout=15.0, disconnect_timeout=10.0):
        self.addr = (host, port)
        self.conns: dict[int, socket.socket] = {}
        self.bufs: dict[int, bytearray] = {}
        self.read_timeout = read_timeout
        self.disconnect_timeout = disconnect_timeout
        self.fmts = load_formats()

    def close(self):
        for s in self.conns.values():
            s.close()
        self.conns.clear()

    def _read_message(self, conn: int, where: str) -> bytes:
        s, buf = self.conns[conn], self.bufs[conn]
        deadline = time.monotonic() + self.read_timeout
        while True:
            m = re.search(rb"\x0110=\d{3}\x01", buf)
            if m:
                msg = bytes(buf[:m.end()])
                del buf[:m.end()]
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScriptFailure(f"{where}: timed out waiting for a message; have {bytes(buf)!r}")
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ScriptFailure(f"{where}: connection closed while a message was expected")
            buf += data

    def compare(self, expected: bytes, actual: bytes, where: str) -> None:
        # the received frame must itself be well formed
        body_start = actual.index(SOH, actual.index(b"9=")) + 1
        trailer = actual.rindex(b"\x0110=")
        declared = int(actual[actual.index(b"9=") + 2:body_start - 1])
        if declared != trailer + 1 - body_start:
            raise ScriptFailure(f"{where}: BodyLength {declared} != {trailer + 1 - body_start}: {actual!r}")
        if int(actual[trailer + 4:-1]) != sum(actual[:trailer + 1]) % 256:
            raise ScriptFailure(f"{where}: bad CheckSum in {actual!r}")
        exp, act = split(expected), split(actual)
        problem = None
        if [t for t, _ in exp] != [t for t, _ in act]:
            problem = "tags differ"
        else:
            for (t, ev), (_, av) in zip(exp, act):
                rx = self.fmts.get(t)
                if rx is not None:
                    if not rx.match(av):     # anchored at the start, like the reference harness
                        problem = f"tag {t} value {av!r} does not match {rx.pattern!r}"
                        break
                elif ev != av:
                    problem = f"tag {t}: expected {ev!r}, got {av!r}"
                    break
        if problem:
            raise ScriptFailure(f"{where}: {problem}\n  expected {expected.replace(SOH, b'|')!r}"
                                f"\n  received {actual.replace(SOH, b'|')!r}")

    def run(self, path: Path) -> None:
        for n, (kind, conn, rest) in enumerate(parse_script(path), 1):
            where = f"{path.name} step {n} ({kind}{rest[:40]!r})"
            if rest == b"CONNECT":
                if kind == "i":
                    s = socket.create_connection(self.addr, timeout=5)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.conns[conn] = s
                    self.bufs[conn] = bytearray()
                continue
            if rest == b"DISCONNECT":
                if kind == "i":
                    self.conns.pop(conn).close()
                else:
                    self._expect_disconnect(conn, where)
                continue
            msg = complete(expand_time(rest, time.time()))
            if kind == "I":
                self.conns[conn].sendall(msg)
            elif kind == "E":
                self.compare(msg, self._read_message(conn, where), where)
            else:
                raise ScriptFailure(f"{where}: unknown action {kind!r}")

    def _expect_disconnect(self, conn: int, where: str) -> None:
        s, buf = self.conns[conn], self.bufs[conn]
        if buf:
            raise ScriptFailure(f"{where}: expected disconnect, have unread data {bytes(buf)!r}")
        deadline = time.monotonic() + self.disconnect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScriptFailure(f"{where}: connection not closed within {self.disconnect_timeout} s")
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                raise ScriptFailure(f"{where}: expected disconnect, received {data.replace(SOH, b'|')!r}")
            self.conns.pop(conn).close()
            return
