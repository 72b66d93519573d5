"""Readers for recorded venue sessions (the formats of appliance/data/venues/README.md).

Two formats:

- text: ``X.ws.N.0`` holds one WebSocket session, one line per event:
  ``<url> <-> <ts>`` (connected), ``<url> <- <ts>: <text>`` (frame sent by the client),
  ``<ts>: <text>`` (frame received). ``X.0`` and ``X.http.N.0`` hold REST responses
  ``<url> -> <ts>: <body>``; ``X.0`` ends with ``configuration: <json>``.
- ``X.jsonl.zst``: zstd JSON lines; a header line (``"t": "header"``, ``config``), then events
  with ``"t"`` in connect / send / recv / http, ``ts``, ``data`` (frame or body) or ``url``/``addr``.

``ts`` is the local receive time, Unix seconds as a float. Frames and bodies are returned as the
exact bytes recorded.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

CONNECT = "connect"
SEND = "send"
RECV = "recv"
HTTP = "http"


class RecordingError(ValueError):
    """A recording file is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class Event:
    kind: str          # connect / send / recv / http
    ts: float
    data: bytes        # frame or body (b"" for connect)
    url: str = ""      # ws address or REST URL


_TS = rb"(\d+(?:\.\d*)?)"
_RE_CONNECT = re.compile(rb"^(\S+) <-> " + _TS + rb"\s*$")
_RE_SEND = re.compile(rb"^(\S+) <- " + _TS + rb": ")
_RE_HTTP = re.compile(rb"^(\S+) -> " + _TS + rb": ")
_RE_RECV = re.compile(rb"^" + _TS + rb": ")


def _is_zst(path: Path) -> bool:
    return path.name.endswith(".zst")


def _zst_lines(path: Path) -> Iterator[bytes]:
    import zstandard
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh)
        for line in io.BufferedReader(reader, 1 << 20):
            line = line.strip()
            if line:
                yield line


def _zst_events(path: Path) -> Iterator[tuple[dict, Event | None]]:
    for no, line in enumerate(_zst_lines(path), 1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise RecordingError(f"{path}:{no}: not JSON ({e})") from None
        t = obj.get("t")
        if t == "header":
            yield obj, None
            continue
        if t not in (CONNECT, SEND, RECV, HTTP):
            raise RecordingError(f"{path}:{no}: unknown event type {t!r}")
        data = obj.get("data", "")
        yield obj, Event(t, float(obj.get("ts", 0.0)),
                         data.encode() if isinstance(data, str) else bytes(data or b""),
                         obj.get("url") or obj.get("addr") or "")


def events(path: str | Path) -> Iterator[Event]:
    """Every event of a recording file (either format), in file order."""
    path = Path(path)
    if _is_zst(path):
        for _, ev in _zst_events(path):
            if ev is not None:
                yield ev
        return
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            if line.startswith(b"configuration: "):
                continue
            m = _RE_RECV.match(line)
            if m:
                yield Event(RECV, float(m.group(1)), line[m.end():])
                continue
            m = _RE_HTTP.match(line)
            if m:
                yield Event(HTTP, float(m.group(2)), line[m.end():], m.group(1).decode())
                continue
            m = _RE_SEND.match(line)
            if m:
                yield Event(SEND, float(m.group(2)), line[m.end():], m.group(1).decode())
                continue
            m = _RE_CONNECT.match(line)
            if m:
                yield Event(CONNECT, float(m.group(2)), b"", m.group(1).decode())
                continue
            raise RecordingError(f"{path}:{no}: unrecognised line {line[:80]!r}")


def frames(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(ts, frame bytes) of every frame received on the WebSocket."""
    for ev in events(path):
        if ev.kind == RECV:
            yield ev.ts, ev.data


def http_bodies(path: str | Path) -> Iterator[tuple[str, float, bytes]]:
    """(url, ts, body) of every REST response in a file."""
    for ev in events(path):
        if ev.kind == HTTP:
            yield ev.url, ev.ts, ev.data


def configuration(path: str | Path) -> dict | None:
    """The recording's subscription configuration (X.0 trailer or jsonl header), if any."""
    path = Path(path)
    if _is_zst(path):
        for obj, ev in _zst_events(path):
            if ev is None:
                return obj.get("config")
            return None
        return None
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"configuration: "):
                return orjson.loads(line[15:])
    return None


def venue_prefix(path: str | Path) -> str:
    """``BINANCE`` for ``.../BINANCE.ws.1.0`` or ``.../BINANCE.jsonl.zst``."""
    return Path(path).name.split(".", 1)[0]


@dataclass
class Session:
    """A recorded session with what replay needs from its sibling files."""
    path: Path
    metadata: bytes                              # X.0 format: "<url> -> <ts>: <body>" lines
    snapshots: list[tuple[str, float, bytes]]    # (url, ts, body) REST responses besides metadata

    def events(self) -> Iterator[Event]:
        return events(self.path)


def open_session(path: str | Path) -> Session:
    """Open a recorded WS session and collect metadata and REST snapshots from its siblings
    (``X.0``, ``X.http.N.0``) or, for ``.jsonl.zst``, from the http events of the same file."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording")
    if _is_zst(path):
        meta_lines = []
        conf = None
        snaps = []
        first = True
        for obj, ev in _zst_events(path):
            if ev is None:
                conf = obj.get("config")
                continue
            if ev.kind == HTTP:
                if first:
                    meta_lines.append(ev.url.encode() + b" -> " + repr(ev.ts).encode() + b": " + ev.data)
                else:
                    snaps.append((ev.url, ev.ts, ev.data))
            elif ev.kind == RECV:
                first = False
        if conf is not None:
            meta_lines.append(b"configuration: " + orjson.dumps(conf))
        return Session(path, b"\n".join(meta_lines) + b"\n", snaps)
    prefix = venue_prefix(path)
    meta_path = path.with_name(prefix + ".0")
    if not meta_path.is_file():
        raise RecordingError(f"{path}: venue metadata {meta_path.name} not found next to it")
    snaps = []
    for http in sorted(path.parent.glob(prefix + ".http.*.0")):
        snaps.extend(http_bodies(http))
    snaps.sort(key=lambda s: s[1])
    return Session(path, meta_path.read_bytes(), snaps)
