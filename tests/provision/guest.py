"""Disposable Debian hosts for tests/provision and tests/systemd, reached by Ansible over ssh.

- ``debian_tree``: one debootstrap tree per test session (kernel, grub-pc, systemd, sshd, python3,
  chrony, irqbalance, sudo: a stock server install), built once and shared read-only;
- ``QemuVm``: that tree on a partitioned disk booted by QEMU's BIOS (full-system emulation, TCG):
  the first boot loads the kernel directly and installs grub to the disk's MBR (what the Debian
  installer does); every later boot goes BIOS -> grub -> the kernel command line grub.cfg says;
- ``Container``: that tree (an overlay, so the shared tree stays clean) booted by
  ``systemd-nspawn --boot``: systemd as PID 1 at native speed, host network, sshd on a free port.

Both have a ``deploy`` user with passwordless sudo and the test's ssh key, as the example inventory
expects (``ansible_user: deploy``, ``become: true``). Nothing here imports the appliance.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "sudo", "python3",
            "python3-venv", "python3-pip", "python3-apt", "chrony", "irqbalance", "procps", "iproute2",
            "kmod", "e2fsprogs", "linux-image-amd64", "grub-pc", "initramfs-tools")
SSH_OPTS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")


class GuestError(RuntimeError):
    """A guest could not be built, booted or reached (the message says which step and why)."""


def missing_tools(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def mirror() -> str:
    """The Debian mirror of this machine's apt sources (deb.debian.org when none is configured)."""
    texts = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if f.is_file():
            texts.append(f.read_text())
    for text in texts:
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = m.group(1)
            if "security" not in uri and "debian" in uri:
                return uri
    return "http://deb.debian.org/debian"


def suite() -> str:
    try:
        osr = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        if osr.get("ID") == "debian" and osr.get("VERSION_CODENAME"):
            return osr["VERSION_CODENAME"].strip('"')
    except OSError:
        pass
    return "bookworm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([str(a) for a in argv], **kw)


def _must(argv, what: str, **kw) -> subprocess.CompletedProcess:
    r = _run(argv, **kw)
    if r.returncode != 0:
        raise GuestError(f"{what} failed (exit {r.returncode}): {' '.join(map(str, argv))}\n"
                         f"{(r.stdout or '')[-3000:]}\n{(r.stderr or '')[-3000:]}")
    return r


# -- the shared tree ----------------------------------------------------------------------------

def debian_tree(workdir: Path) -> Path:
    """``workdir/tree``: debootstrap of this machine's Debian suite with PACKAGES, built once (a
    lock file serialises concurrent callers; ``.complete`` marks a finished build)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    with open(workdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (workdir / ".complete").exists():
            return tree
        shutil.rmtree(tree, ignore_errors=True)
        r = _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), suite(), tree,
                  mirror()], timeout=1500, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            raise GuestError(f"debootstrap {suite()} from {mirror()} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        configure_tree(tree)
        (workdir / ".complete").touch()
    return tree


_CLEANUP: set = set()


def session_tree(tmp_path_factory) -> Path:
    """The tree for this pytest session (every module that boots a guest shares it); removed when
    the session's process exits."""
    import atexit
    base = tmp_path_factory.getbasetemp() / "debian-tree"
    if base not in _CLEANUP:
        _CLEANUP.add(base)
        atexit.register(shutil.rmtree, base, True)
    return debian_tree(base)


def configure_tree(tree: Path) -> None:
    """What every guest shares: local CAs, the deploy user, no periodic jobs, no machine-id."""
    _trust_local_cas(tree)
    # the deploy user of the example inventory: ssh key login, passwordless sudo
    _must(["chroot", tree, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "deploy"],
          "useradd deploy")
    (tree / "etc/sudoers.d/deploy").write_text("deploy ALL=(ALL) NOPASSWD: ALL\n")
    (tree / "etc/sudoers.d/deploy").chmod(0o440)
    # nothing here needs the daily timers or the boot-time fsck sweep (saves boot time under TCG)
    for unit in ("e2scrub_reap.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "man-db.timer", "e2scrub_all.timer", "fstrim.timer"):
        (tree / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (tree / "etc/systemd/system" / unit).symlink_to("/dev/null")
    (tree / "etc/machine-id").write_text("")


def _trust_local_cas(root: Path) -> None:
    """This machine's local CAs (e.g. a TLS-inspecting proxy's) trusted inside the tree too."""
    local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    if not local_cas or not (root / "usr/sbin/update-ca-certificates").exists():
        return
    dest = root / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    for ca in local_cas:
        shutil.copy(ca, dest / ca.name)
    _run(["chroot", root, "update-ca-certificates"])


def ssh_key(workdir: Path) -> Path:
    key = workdir / "id_ed25519"
    if not key.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        _must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tests", "-f", key], "ssh-keygen")
    return key


def _authorize(root: Path, key: Path) -> None:
    ssh = root / "home/deploy/.ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    uid_gid = _passwd_ids(root, "deploy")
    for p in (ssh, ssh / "authorized_keys"):
        os.chown(p, *uid_gid)
    ssh.chmod(0o700)
    (ssh / "authorized_keys").chmod(0o600)


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3])
    raise GuestError(f"no user {user} in {root}/etc/passwd")


# -- wheels for the guests' virtualenvs -----------------------------------------------------------

def requirements() -> list[str]:
    """The role's pinned virtualenv requirements, all of them: the role validates the rendered
    config with the installed appliance's ``config.load``, whose part validators import the
    engine (numpy, numba)."""
    import yaml
    defaults = yaml.safe_load((REPO / "provision/roles/appliance/defaults/main.yml").read_text())
    return list(defaults["appliance_requirements"])


def session_wheelhouse(tmp_path_factory) -> Path:
    """The session's wheelhouse of ``requirements()`` (downloaded once, shared by every guest)."""
    return wheelhouse(tmp_path_factory.getbasetemp() / "wheels", requirements())


def wheelhouse(dest: Path, requirements: list[str]) -> Path:
    """Download the pinned requirements (and nothing else) as wheels into ``dest`` once, with this
    machine's pip configuration; guests install from there with --no-index."""
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / ".requirements"
    want = "\n".join(sorted(requirements))
    if stamp.exists() and stamp.read_text() == want:
        return dest
    import sys
    r = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "-d", dest, *requirements], timeout=900)
    if r.returncode != 0:
        raise GuestError(f"pip download of the appliance requirements failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    stamp.write_text(want)
    return dest


MITOGEN = "mitogen==0.3.54"


def mitogen_env(dest: Path) -> dict:
    """Environment that runs ansible-playbook with Mitogen's strategy (one persistent Python on
    the target instead of a fresh interpreter compiling Ansible's module_utils for every task:
    ~7 s -> ~2 s a task in a TCG guest). The wheel is downloaded once into ``dest`` and used from
    there, nothing is installed. Empty (plain Ansible, slower) when it cannot be had."""
    import sys
    import zipfile
    plugins = dest / "ansible_mitogen/plugins/strategy"
    if not plugins.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        r = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", dest, MITOGEN], timeout=300)
        wheels = sorted(dest.glob("mitogen-*.whl"))
        if r.returncode != 0 or not wheels:
            print(f"guest: {MITOGEN} not available ({r.stderr.strip()[-300:]}); plain Ansible (slow under TCG)")
            return {}
        zipfile.ZipFile(wheels[-1]).extractall(dest)
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(dest), os.environ.get("PYTHONPATH")])),
            "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_TIMEOUT": "120",
            "ANSIBLE_DEPRECATION_WARNINGS": "False"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(directory: Path, host: str = "0.0.0.0"):
    """Serve ``directory`` (pip --find-links reads its index page) on a free port; yields the port."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    srv = http.server.ThreadingHTTPServer((host, 0), handler)
    t = threading.Thread(target=srv.serve_forever, name="wheelhouse-http", daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


# -- reaching a guest --------------------------------------------------------------------------

class Ssh:
    """ssh to deploy@host:port with the test key; ``run`` as root through sudo."""

    def __init__(self, host: str, port: int, key: Path, user: str = "deploy"):
        self.host, self.port, self.key, self.user = host, port, key, user

    def argv(self, command: str, sudo: bool = True) -> list[str]:
        cmd = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
        return ["ssh", *SSH_OPTS, "-i", str(self.key), "-p", str(self.port), f"{self.user}@{self.host}", cmd]

    def run(self, command: str, timeout: float = 300, check: bool = False, sudo: bool = True,
            input: str | None = None):
        r = subprocess.run(self.argv(command, sudo), capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise GuestError(f"{self.user}@{self.host}:{self.port}: {command!r} exited {r.returncode}:\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def out(self, command: str, timeout: float = 300) -> str:
        return self.run(command, timeout=timeout, check=True).stdout

    def wait(self, timeout: float, alive=lambda: True, what: str = "ssh") -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not alive():
                raise GuestError(f"{what}: the guest went away while waiting for ssh ({last})")
            try:
                r = subprocess.run(self.argv("true", sudo=False), capture_output=True, text=True, timeout=30)
                if r.returncode == 0:
                    return
                last = r.stderr.strip()[-300:]
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            time.sleep(2)
        raise GuestError(f"{what}: no ssh on {self.host}:{self.port} after {timeout:.0f} s ({last})")

    def inventory_vars(self) -> dict:
        return {"ansible_host": self.host, "ansible_port": self.port, "ansible_user": self.user,
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": " ".join(SSH_OPTS[:6]),
                "ansible_python_interpreter": "/usr/bin/python3"}


# -- QEMU ------------------------------------------------------------------------------------

class QemuVm:
    """The tree on a partitioned disk (msdos label, one ext4 partition at 1 MiB), booted by QEMU.

    Nothing needs loop devices or mounts: ``mkfs.ext4 -d`` fills the filesystem from a directory
    and the first boot (``boot(direct=True)``: kernel and initrd given to QEMU) runs grub-install
    on the guest's own disk. Every later ``boot()`` is SeaBIOS -> MBR -> grub -> grub.cfg."""

    def __init__(self, workdir: Path, tree: Path, key: Path, cpus: int = 4, memory_mb: int = 2048,
                 cpu_model: str = "max", disk_gb: int = 6):
        self.workdir, self.tree, self.key = workdir, tree, key
        self.cpus, self.memory_mb, self.cpu_model, self.disk_gb = cpus, memory_mb, cpu_model, disk_gb
        self.disk = workdir / "disk.raw"
        self.fs_uuid = str(uuid.uuid4())
        self.port = free_port()
        self.ssh = Ssh("127.0.0.1", self.port, key)
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.kernel = self.initrd = None

    def build(self) -> None:
        """Stage the VM's own files over a copy-free view of the tree, then write the disk."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        stage = self.workdir / "stage"
        with overlay(self.tree, self.workdir / "upper", self.workdir / "work", stage):
            self._configure(stage)
            self.kernel = self.workdir / "vmlinuz"
            self.initrd = self.workdir / "initrd.img"
            shutil.copy(sorted(stage.glob("boot/vmlinuz-*"))[-1], self.kernel)
            shutil.copy(sorted(stage.glob("boot/initrd.img-*"))[-1], self.initrd)
            size = self.disk_gb << 30
            fs = self.workdir / "rootfs.ext4"
            fs.unlink(missing_ok=True)
            _must(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", self.fs_uuid, "-d", stage, fs,
                   f"{(size >> 20) - 1}M"], "mkfs.ext4 -d", timeout=900)
        with open(self.disk, "wb") as d:
            d.truncate(size)
        _must(["sfdisk", "--quiet", self.disk], "sfdisk", input="label: dos\nstart=2048, type=83, bootable\n")
        _must(["dd", f"if={fs}", f"of={self.disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"],
              "dd the filesystem into partition 1", timeout=900)
        fs.unlink()

    def _configure(self, root: Path) -> None:
        (root / "etc/hostname").write_text("trade-vm\n")
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 trade-vm\n")
        (root / "etc/fstab").write_text(f"UUID={self.fs_uuid} / ext4 errors=remount-ro 0 1\n")
        net = root / "etc/systemd/network/80-dhcp.network"
        net.parent.mkdir(parents=True, exist_ok=True)
        net.write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n")
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "systemd-networkd.service"
        if not link.is_symlink():
            link.symlink_to("/lib/systemd/system/systemd-networkd.service")
        # the guest's console is the serial port (its log is the test's boot log)
        dropin = root / "etc/default/grub.d/10-test-vm.cfg"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text('GRUB_CMDLINE_LINUX="console=ttyS0,115200"\nGRUB_TERMINAL=serial\n'
                          'GRUB_SERIAL_COMMAND="serial --speed=115200"\nGRUB_TIMEOUT=1\n'
                          'GRUB_CMDLINE_LINUX_DEFAULT=""\n')
        _authorize(root, self.key)

    def boot(self, direct: bool = False, timeout: float = 600) -> None:
        """Start QEMU and wait for ssh. ``direct``: kernel and initrd from the host (first boot)."""
        if self.proc is not None and self.proc.poll() is None:
            raise GuestError("the VM is already running")
        self.boots += 1
        self.serial = self.workdir / f"serial-{self.boots}.log"
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", self.cpu_model, "-smp", str(self.cpus),
                "-m", str(self.memory_mb), "-nographic", "-no-reboot", "-monitor", "none",
                "-serial", f"file:{self.serial}",
                # one queue: a multi-queue disk's per-CPU queue IRQs are kernel-managed and stay on
                # their (isolated) CPUs by design (isolcpus=managed_irq), which T-4.3 cannot tell
                # from a mis-pinned IRQ without IRQ debugfs (not in Debian's kernel)
                "-drive", f"file={self.disk},format=raw,if=none,id=root,cache=unsafe",
                "-device", "virtio-blk-pci,drive=root,num-queues=1",
                "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{self.port}-:22"]
        if direct:
            argv += ["-kernel", self.kernel, "-initrd", self.initrd,
                     "-append", f"root=UUID={self.fs_uuid} ro console=ttyS0,115200"]
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                     stdout=open(self.workdir / f"qemu-{self.boots}.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ssh.wait(timeout, alive=lambda: self.proc.poll() is None, what=f"boot {self.boots}")

    def install_bootloader(self) -> None:
        """grub on the guest's own disk, as the installer leaves a stock host. No grub.cfg yet:
        the playbook's update-grub writes the first one, so a boot through grub proves it ran."""
        self.ssh.run("grub-install --target=i386-pc /dev/vda", timeout=600, check=True)

    def shutdown(self, timeout: float = 300) -> None:
        """Orderly power-off from inside (QEMU runs with -no-reboot: a reboot ends the process
        too), then wait for QEMU to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ssh.run("systemctl poweroff", timeout=60)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise GuestError(f"the VM did not power off within {timeout:.0f} s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def serial_log(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""


# -- systemd-nspawn ------------------------------------------------------------------------------

@contextlib.contextmanager
def overlay(lower: Path, upper: Path, work: Path, merged: Path):
    """``merged``: ``lower`` read-only with every write going to ``upper`` (overlayfs)."""
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    _must(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
           merged], "overlay mount")
    try:
        yield merged
    finally:
        _run(["umount", merged])


class Container:
    """The tree booted by ``systemd-nspawn --boot`` over an overlay (the tree stays read-only).

    Host network (no --private-network): sshd listens on 127.0.0.1:``port``; everything else the
    test starts in the container must use free ports too. ``binds``: {host dir: container dir},
    read-only. ``capabilities``: beyond nspawn's default set (the appliance's units need
    CAP_IPC_LOCK, which nspawn does not grant by default). Without ``boot_loader`` the grub
    packages are removed from the container, as a container image has none."""

    def __init__(self, workdir: Path, tree: Path, key: Path, name: str, binds: dict | None = None,
                 boot_loader: bool = False, capabilities: tuple = ()):
        self.workdir, self.tree, self.key, self.name = workdir, tree, key, name
        self.binds = binds or {}
        self.boot_loader = boot_loader
        self.capabilities = capabilities
        self.port = free_port()
        self.ssh = Ssh("127.0.0.1", self.port, key)
        self.root = workdir / "root"
        self.proc: subprocess.Popen | None = None
        self._mounted = False

    def start(self, timeout: float = 120) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in ("upper", "work", "root"):
            (self.workdir / d).mkdir(exist_ok=True)
        _must(["mount", "-t", "overlay", "overlay", "-o",
               f"lowerdir={self.tree},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}",
               self.root], "overlay mount")
        self._mounted = True
        root = self.root
        (root / "etc/hostname").write_text(f"{self.name}\n")
        (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        conf = root / "etc/ssh/sshd_config.d/10-test-container.conf"
        conf.write_text(f"Port {self.port}\nListenAddress 127.0.0.1\n")
        _authorize(root, self.key)
        if not self.boot_loader:
            # a container boots no kernel of its own: no grub tooling in it (as in container images)
            _must(["chroot", root, "dpkg", "--purge", "grub-pc", "grub-pc-bin", "grub2-common", "grub-common"],
                  "remove grub from the container", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        argv = ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", f"--machine={self.name}",
                f"--directory={root}", "--console=read-only", "--link-journal=no"]
        for src, dst in self.binds.items():
            argv.append(f"--bind-ro={src}:{dst}")
        if self.capabilities:
            argv.append("--capability=" + ",".join(self.capabilities))
        self.log = self.workdir / "console.log"
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ssh.wait(timeout, alive=lambda: self.proc.poll() is None, what=f"container {self.name}")

    def stop(self, timeout: float = 60) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.ssh.run("systemctl poweroff", timeout=30)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self._mounted:
            _run(["umount", self.root])
            self._mounted = False

    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
