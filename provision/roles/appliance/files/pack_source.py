#!/usr/bin/env python3
"""Pack the appliance's source (pyproject, appliance/, tuning/, benches/) into a reproducible sdist.

Run on the Ansible controller: same sources -> byte-identical archive (sorted entries, zero mtimes,
no owner names, gzip header without a timestamp), so the copy to the host is idempotent and the
package is reinstalled only when the code changed. Skips caches and compiled files.
"""
import gzip
import io
import sys
import tarfile
from pathlib import Path

TOP = ("pyproject.toml", "README.md", "appliance", "tuning", "benches")
SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".nbi", ".nbc", ".so")


def files(repo: Path):
    for top in TOP:
        p = repo / top
        if p.is_file():
            yield p
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(repo)
                if f.is_file() and not SKIP_DIRS.intersection(rel.parts) and not f.suffix in SKIP_SUFFIXES \
                        and not any(part.endswith(".egg-info") for part in rel.parts):
                    yield f


def main(repo: str, dest: str, name: str = "appliance-src") -> int:
    repo_p = Path(repo).resolve()
    if not (repo_p / "pyproject.toml").is_file():
        print(f"pack_source: {repo_p} has no pyproject.toml", file=sys.stderr)
        return 2
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files(repo_p):
            info = tarfile.TarInfo(f"{name}/{f.relative_to(repo_p).as_posix()}")
            data = f.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o755 if f.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    new = out.getvalue()
    d = Path(dest)
    if not d.exists() or d.read_bytes() != new:
        d.parent.mkdir(parents=True, exist_ok=True)
        d.write_bytes(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
