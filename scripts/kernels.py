"""The kernel matrix: netdrop's tests on the kernels Kubernetes nodes run, booted under QEMU.

Run as root: scripts/kernels [--kernels 5.10,6.1,6.12] [--accel auto|tcg|kvm] [--timeout S]
                             [--] [pytest arguments, default: -m portable tests/kernel]

For each kernel it
  1. fetches Debian's packaged kernel (linux-image-amd64 of bullseye 5.10, bookworm 6.1, trixie
     6.12) with `apt-get download` through an apt configuration of its own under the cache
     directory: the machine's own sources, lists and archives stay untouched;
  2. extracts it (vmlinuz, modules; depmod), and makes an initramfs of busybox and the few
     modules that mount the root file system over virtio-9p;
  3. boots it under QEMU with this machine's root file system shared read-only (the guest's
     writes go to an overlay in its RAM), so the guest runs this checkout, its .venv and the
     machine's bcc, iproute2, iptables, ... on its own kernel, where it may change anything;
  4. runs the tests in the guest (scripts/kernels-guest is its init) and reads their results
     from a directory shared read-write, one per run.

Then it prints a table, kernel x test, and exits non-zero if any test failed on any kernel, or
a kernel did not boot or finish in time: a failure names the kernel and the test.

QEMU's own CPU emulation (TCG) is the default: our machines' /dev/kvm is paravirtual and cannot
run a stock kernel. `--accel kvm` (or auto, where the CPU has vmx or svm) uses KVM.
Everything runs inside the guests; the host's network namespace is never touched.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("NETDROP_KERNELS_CACHE", "/var/cache/netdrop-kernels"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = os.environ.get("NETDROP_DEBIAN_MIRROR", "http://deb.debian.org")
# The guest tests run first (tests/conftest.py orders them): they need nf_conntrack unloaded.
DEFAULT_PYTEST = ["-m", "portable", "tests/kernel"]


@dataclass(frozen=True)
class Kernel:
    """One Debian release's packaged kernel."""

    name: str        # what the table and --kernels call it
    suite: str       # Debian suite whose linux-image-amd64 it is
    nodes: str       # which nodes run such a kernel


KERNELS = (
    Kernel("5.10", "bullseye", "Debian 11, Amazon Linux 2"),
    Kernel("6.1", "bookworm", "Debian 12, Amazon Linux 2023, COS"),
    Kernel("6.12", "trixie", "Debian 13"),
)

# What the initramfs loads to reach the root file system and the console: the
# rest (netfilter, veth, VXLAN, ...) the guest loads from the real modules tree.
BOOT_MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay")


def log(msg: str) -> None:
    print(f"kernels: {msg}", file=sys.stderr, flush=True)


def private(path: Path) -> Path:
    """A directory only root can change, up to /: it holds the kernels root boots and
    the trees it runs dpkg-deb and depmod on (netdrop's own check, tracer/trust.py)."""
    from tracer.errors import UserError
    from tracer.trust import private_dir

    try:
        return private_dir(path, "the kernels' cache (NETDROP_KERNELS_CACHE)")
    except UserError as exc:
        sys.exit(f"kernels: {exc}")


# ---- 1. fetch ---------------------------------------------------------------------------

def apt_options(kernel: Kernel) -> list[str]:
    """apt's state, sources and archives for this suite, all under the cache directory."""
    base = private(CACHE / "apt" / kernel.suite)
    for sub in ("lists/partial", "archives/partial", "parts", "prefs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    sources = base / "sources.list"
    sources.write_text(
        f"deb [signed-by={KEYRING}] {MIRROR}/debian {kernel.suite} main\n"
        f"deb [signed-by={KEYRING}] {MIRROR}/debian-security {kernel.suite}-security main\n")
    return ["-o", f"Dir::Etc::sourcelist={sources}", "-o", f"Dir::Etc::sourceparts={base / 'parts'}",
            "-o", f"Dir::Etc::preferencesparts={base / 'prefs'}", "-o", "Dir::Etc::preferences=/dev/null",
            "-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::Cache={base}",
            "-o", "Dir::State::status=/dev/null", "-o", "APT::Sandbox::User=root", "-q"]


def run(cmd: list[str], **kw: object) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if out.returncode != 0:
        sys.exit(f"kernels: {' '.join(cmd[:3])} ... failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return str(out.stdout)


def fetch(kernel: Kernel) -> Path:
    """The suite's current linux-image-amd64, downloaded and extracted once: its directory."""
    opts = apt_options(kernel)
    run(["apt-get", *opts, "update"])
    # linux-image-amd64 is a metapackage: the kernel is the package it depends on.
    deps = run(["apt-cache", *opts, "depends", "linux-image-amd64"])
    m = re.search(r"Depends: (linux-image-[0-9][\w.+-]*)", deps)
    if not m:
        sys.exit(f"kernels: no kernel package behind {kernel.suite}'s linux-image-amd64: {deps.strip()}")
    package = m.group(1)
    root = CACHE / "extracted" / package
    done = root / ".complete"
    if done.exists():
        return root
    debs = private(CACHE / "debs")
    run(["apt-get", *opts, "download", package], cwd=debs)
    deb = max(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    shutil.rmtree(root, ignore_errors=True)
    private(root)
    run(["dpkg-deb", "-x", str(deb), str(root)])
    # trixie installs modules under usr/lib/modules: one place for every kernel
    if (root / "usr/lib/modules").is_dir() and not (root / "lib/modules").exists():
        (root / "lib").mkdir(exist_ok=True)
        (root / "usr/lib/modules").rename(root / "lib/modules")
    release = modules_dir(root).name
    run(["depmod", "-b", str(root), release])
    done.write_text(f"{deb.name}\n")
    log(f"{kernel.name}: {deb.name} extracted")
    return root


def modules_dir(root: Path) -> Path:
    dirs = [p for p in (root / "lib/modules").iterdir() if p.is_dir()]
    if len(dirs) != 1:
        sys.exit(f"kernels: expected one modules directory in {root}/lib/modules, found {len(dirs)}")
    return dirs[0]


# ---- 2. initramfs -------------------------------------------------------------------------

def module_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The wanted modules and what they depend on, dependencies first (modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()

    by_name = {re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", Path(m).name).replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps[mod]):     # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name in by_name:     # absent: built into this kernel
            visit(by_name[name])
    return [moddir / m for m in order]


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as initramfs): (path, mode, data)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(root: Path) -> Path:
    """busybox, the boot modules (decompressed: busybox's insmod reads plain .ko) and /init."""
    target = root / "initramfs.cpio.gz"
    init = ROOT / "scripts" / "kernels-init"
    if target.exists() and target.stat().st_mtime >= init.stat().st_mtime:
        return target
    busybox = Path("/bin/busybox")
    if not busybox.exists() or not _static(busybox):
        sys.exit("kernels: a static busybox is needed (apt-get install busybox-static)")
    entries: list[tuple[str, int, bytes]] = [
        ("bin", 0o040755, b""), ("modules", 0o040755, b""), ("dev", 0o040755, b""),
        ("bin/busybox", 0o100755, busybox.read_bytes()),
        ("init", 0o100755, init.read_bytes()),
    ]
    for i, mod in enumerate(module_order(modules_dir(root), BOOT_MODULES)):
        data = mod.read_bytes()
        if mod.suffix == ".xz":
            data = lzma.decompress(data)
        name = f"{i:02d}-{mod.name.split('.ko')[0]}.ko"
        entries.append((f"modules/{name}", 0o100644, data))
    target.write_bytes(gzip.compress(cpio_newc(entries), 6))
    return target


def _static(path: Path) -> bool:
    """No ELF interpreter (PT_INTERP) in the file: statically linked."""
    return b"/lib64/ld-linux" not in path.read_bytes()[:4096]


# ---- 3. boot ------------------------------------------------------------------------------

@dataclass
class Outcome:
    kernel: Kernel
    release: str = ""
    booted: bool = False
    rc: int | None = None         # the tests' exit status; None: they never finished
    seconds: float = 0.0
    tests: dict[str, str] = field(default_factory=dict)    # test id -> passed/failed/skipped/error
    failures: dict[str, str] = field(default_factory=dict)  # test id -> first line of why
    note: str = ""


def accel_args(accel: str) -> list[str]:
    if accel == "auto":
        flags = Path("/proc/cpuinfo").read_text()
        accel = "kvm" if re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) and os.access("/dev/kvm", os.W_OK) \
            else "tcg"
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # Multi-threaded TCG with a large translation cache: clang, the slow part, is big code.
    return ["-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"]


def boot(kernel: Kernel, root: Path, job: list[str], accel: str, timeout: float, memory: str, cpus: int) -> Outcome:
    outcome = Outcome(kernel, release=modules_dir(root).name)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    out = Path(tempfile.mkdtemp(prefix=f"netdrop-kernel-{kernel.name}-"))
    try:
        (out / "job").write_text("".join(f"{word}\0" for word in job))
        env = {k: v for k, v in os.environ.items() if k == "CI" or k.startswith("NETDROP_TEST")}
        # Tests that bound a time scale it: CPU emulation runs 20-30 times slower.
        env.setdefault("NETDROP_TEST_TIME_SCALE", "1" if accel_args(accel)[1] == "kvm" else "30")
        (out / "env").write_text("".join(f"{k}={v}\0" for k, v in env.items()))
        cmdline = (f"console=ttyS0 panic=-1 oops=panic quiet loglevel=4 nd.repo={ROOT} "
                   f"nd.modules={modules_dir(root)}")
        cmd = ["qemu-system-x86_64", *accel_args(accel), "-m", memory, "-smp", str(cpus),
               "-nographic", "-nodefaults", "-no-reboot", "-nic", "none",
               "-kernel", str(vmlinuz), "-initrd", str(initramfs(root)), "-append", cmdline,
               "-serial", f"file:{out / 'boot.log'}",
               "-device", "virtio-serial-pci", "-chardev", f"file,id=con,path={out / 'console.log'}",
               "-device", "virtconsole,chardev=con",
               "-virtfs", "local,path=/,mount_tag=ndroot,security_model=passthrough,readonly=on,multidevs=remap",
               # The guest's root may write here: mapped-xattr keeps what it makes plain files
               # of the host (modes, owners and device nodes only as extended attributes).
               "-virtfs", f"local,path={out},mount_tag=ndout,security_model=mapped-xattr,multidevs=remap"]
        start = time.monotonic()
        log(f"{kernel.name}: booting {outcome.release} ({accel_args(accel)[1]})")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        stop = threading.Event()
        tail = threading.Thread(target=_tail, args=(out / "console.log", kernel.name, stop), daemon=True)
        tail.start()
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            qemu_out, _ = proc.communicate()
            outcome.note = f"did not finish within {timeout:.0f} s"
        finally:
            if proc.poll() is None:     # SIGTERM or an error meanwhile: the guest goes too
                proc.kill()
                proc.wait()
            stop.set()
            tail.join(5)
        outcome.seconds = time.monotonic() - start
        results = {name: _result_file(out / name) for name in RESULT_FILES}
        outcome.booted = results["booted"] is not None
        rc = (results["rc"] or b"").strip()
        if rc.isdigit() and len(rc) < 4:
            outcome.rc = int(rc)
        elif not outcome.note:
            boot_log = (results["boot.log"] or b"").decode(errors="replace")
            tail_lines = (boot_log.strip().splitlines() or [qemu_out.decode(errors="replace").strip()])[-5:]
            what = "guest stopped before the tests ended" if outcome.booted else \
                "guest did not reach its root file system"
            outcome.note = f"{what}: " + " | ".join(tail_lines)
        _read_junit(results["junit.xml"], outcome)
        keep = private(CACHE / "runs") / kernel.name
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(mode=0o700)
        for name, data in results.items():
            if data is not None:
                (keep / name).write_bytes(data)
        return outcome
    finally:
        shutil.rmtree(out, ignore_errors=True)


# What a run leaves in its shared directory that is read back (and kept under
# CACHE/runs/KERNEL), each at most RESULT_MAX bytes: the guest's root wrote them.
RESULT_FILES = ("booted", "rc", "junit.xml", "console.log", "boot.log")
RESULT_MAX = 64 << 20


def _result_file(path: Path) -> bytes | None:
    """A regular file the guest wrote, never through a link, bounded; None if absent or not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(RESULT_MAX)


def _tail(path: Path, name: str, stop: threading.Event) -> None:
    """The guest's console as it arrives, each line prefixed with the kernel."""
    pos = 0
    pending = b""
    while True:
        done = stop.is_set()
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        pos += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            print(f"[{name}] {line.decode(errors='replace').rstrip()}", flush=True)
        if done:
            if pending:
                print(f"[{name}] {pending.decode(errors='replace')}", flush=True)
            return
        time.sleep(0.5)


def _read_junit(data: bytes | None, outcome: Outcome) -> None:
    """pytest's junit.xml: each test's outcome and a failure's first line."""
    if data is None:
        return
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as exc:
        outcome.note = outcome.note or f"unreadable junit.xml: {exc}"
        return
    for case in tree.iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
                lines = (child.get("message") or child.text or "").strip().splitlines()
                outcome.failures[test] = lines[0][:200] if lines else child.tag
            elif child.tag == "skipped":
                status = "skipped"
        outcome.tests[test] = status


# ---- 4. the table ---------------------------------------------------------------------------

def table(outcomes: list[Outcome]) -> Iterator[str]:
    tests = sorted({t for o in outcomes for t in o.tests})
    width = max([len(t) for t in tests] + [20])
    cols = [f"{o.kernel.name} ({o.release})" if o.release else o.kernel.name for o in outcomes]
    yield f"{'test':<{width}}  " + "  ".join(f"{c:<22}" for c in cols)
    for t in tests:
        yield f"{t:<{width}}  " + "  ".join(f"{o.tests.get(t, '-'):<22}" for o in outcomes)
    yield f"{'(run)':<{width}}  " + "  ".join(
        f"{('rc ' + str(o.rc)) if o.rc is not None else 'no result'} {o.seconds:.0f}s".ljust(22) for o in outcomes)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=",".join(k.name for k in KERNELS),
                        help="which kernels, comma-separated (default: all)")
    parser.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per kernel, boot to power-off")
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--fetch-only", action="store_true", help="download and prepare the kernels, boot none")
    parser.add_argument("--shell", action="store_true", help="run the guest's command as given, not pytest")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="pytest arguments (after --)")
    opts = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("kernels: run as root (it downloads kernels into a root-only cache and boots them)", file=sys.stderr)
        return 2
    for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb", "depmod"):
        if not shutil.which(tool):
            print(f"kernels: {tool} is missing (scripts/setup installs what this needs)", file=sys.stderr)
            return 2
    wanted = opts.kernels.split(",")
    unknown = [w for w in wanted if w not in {k.name for k in KERNELS}]
    if unknown:
        print(f"kernels: unknown kernel {', '.join(unknown)}; known: {', '.join(k.name for k in KERNELS)}",
              file=sys.stderr)
        return 2
    args = [a for a in opts.args if a != "--"] if opts.args else []
    if opts.shell:
        job = args
    else:
        job = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-p", "no:cacheprovider",
               "--junitxml", "@OUT@/junit.xml", *(args or DEFAULT_PYTEST)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # through every finally: no guest left
    private(CACHE)
    kernels = [k for k in KERNELS if k.name in wanted]
    roots = {k.name: fetch(k) for k in kernels}
    if opts.fetch_only:
        for k in kernels:
            log(f"{k.name}: {modules_dir(roots[k.name]).name}, initramfs {initramfs(roots[k.name])}")
        return 0
    outcomes = []
    for k in kernels:
        outcomes.append(boot(k, roots[k.name], job, opts.accel, opts.timeout, opts.memory, opts.cpus))
    print()
    for line in table(outcomes):
        print(line)
    failed = False
    for o in outcomes:
        if o.note:
            print(f"FAILED {o.kernel.name} ({o.release}): {o.note}")
            failed = True
        for test, why in o.failures.items():
            print(f"FAILED {o.kernel.name} ({o.release}) {test}: {why}")
            failed = True
        if o.rc not in (0, None) and not o.failures and not o.note:
            print(f"FAILED {o.kernel.name} ({o.release}): exit status {o.rc}")
            failed = True
        if o.rc is None:
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
