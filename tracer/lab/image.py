"""image: the agent's image, built for real with podman from deploy/Dockerfile (scripts/image).

No image registry is reachable from our machines: the base the Dockerfile's FROM names is made
from Debian's packages with mmdebstrap and imported under that name, and the build pulls
nothing (--pull=never). Builds use the host's network (--network host): podman's default bridge
would add a podman0 bridge and iptables rules to the host's own network namespace.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .kubelet import load_daemonset

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DAEMONSET = ROOT / "deploy" / "daemonset.yaml"
# pip inside the build trusts what the host trusts: where a proxy presents its own
# certificate, only the host's bundle has it (passed as a build secret, kept in no layer).
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def log(msg: str) -> None:
    print(f"image: {msg}", file=sys.stderr, flush=True)


class ImageError(Exception):
    """A step that failed: its one line for the user."""


def run(cmd: list[str], log_to: Path | None = None, timeout: float = 1800) -> str:
    """cmd's stdout; ImageError with the end of its output if it fails."""
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
    if log_to is not None:
        log_to.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        raise ImageError(f"{' '.join(cmd[:3])} ... failed (exit {res.returncode}):\n{tail}")
    return res.stdout


# ---- names --------------------------------------------------------------------------------

def full_name(ref: str) -> str:
    """An image reference as podman stores it: a Docker Hub short name ("debian:bookworm-slim")
    becomes docker.io/library/debian:bookworm-slim, as registries.conf's short-name alias does."""
    name, _, tag = ref.partition(":") if "@" not in ref else (ref, "", "")
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in name.split("/")[0] and ":" not in name.split("/")[0] and name.split("/")[0] != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag or 'latest'}"


def base_ref(dockerfile: Path = DOCKERFILE) -> str:
    """The one FROM of the Dockerfile."""
    froms = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.upper().startswith("FROM ")]
    if len(froms) != 1:
        raise ImageError(f"{dockerfile}: expected one FROM, found {len(froms)}")
    return froms[0]


def debian_suite(ref: str) -> str:
    """The Debian suite a debian:SUITE[-slim] base stands for, made here with mmdebstrap."""
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:([a-z]+)(-slim)?", ref)
    if m is None:
        raise ImageError(f"FROM {ref}: not a debian:SUITE image; mmdebstrap makes Debian bases only")
    return m.group(1)


def agent_image(daemonset: Path = DAEMONSET) -> str:
    """The image the DaemonSet runs: the tag the build gets."""
    return str(load_daemonset(daemonset).container["image"])


def exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], stdin=subprocess.DEVNULL).returncode == 0


def image_id(ref: str) -> str | None:
    res = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    return res.stdout.strip() if res.returncode == 0 else None


def size_mb(ref: str) -> float:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", ref]).strip()) / 1e6


# ---- build --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    step: str
    seconds: float

    def __str__(self) -> str:
        return f"{self.step} {self.seconds:.1f} s"


# As Debian's own -slim images: no manuals, documentation (but each package's copyright
# file) or translations. dpkg skips these paths when it unpacks.
SLIM_EXCLUDES = ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/doc/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*")


def build_base(ref: str) -> list[Timing]:
    """The base image from Debian's packages (mmdebstrap, minbase: essential packages and apt),
    imported under ref. Its tar is made in a private directory and removed."""
    suite = debian_suite(ref)
    timings = []
    with tempfile.TemporaryDirectory(prefix="netdrop-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        opts = [f"--dpkgopt=path-exclude={p}" for p in SLIM_EXCLUDES]
        opts.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        t0 = time.monotonic()
        log(f"mmdebstrap --variant=minbase {suite} (Debian's packages, for FROM {ref})")
        run(["mmdebstrap", "--variant=minbase", "--quiet", *opts, suite, str(tar)], timeout=1200)
        timings.append(Timing("mmdebstrap", time.monotonic() - t0))
        t0 = time.monotonic()
        run(["podman", "import", "--change", "CMD=/bin/bash", str(tar), full_name(ref)])
        timings.append(Timing("import", time.monotonic() - t0))
    return timings


def build_image(tag: str, no_cache: bool = False) -> Timing:
    """deploy/Dockerfile built with podman, tagged tag: nothing pulled, the host's network."""
    cmd = ["podman", "build", "--pull=never", "--network", "host", "--layers", "-f", str(DOCKERFILE), "-t", tag]
    if HOST_CA.is_file():
        cmd += ["--secret", f"id=ca,src={HOST_CA}"]
    if no_cache:
        cmd.append("--no-cache")
    log(f"podman build -f deploy/Dockerfile -t {tag}")
    before = image_id(tag)
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="netdrop-build-", suffix=".log", delete=False) as f:
        build_log = Path(f.name)
    try:
        run([*cmd, str(ROOT)], log_to=build_log)
    except ImageError as exc:
        raise ImageError(f"{exc}\n(whole log: {build_log})") from None
    build_log.unlink()
    took = Timing("build", time.monotonic() - t0)
    if before is not None and image_id(tag) != before:
        # The image the tag named before, now nameless: removed, not left to pile up build by build.
        subprocess.run(["podman", "rmi", before], stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return took


def ensure_image(rebuild_base: bool = False, no_cache: bool = False, rebuild: bool = True) -> tuple[str, list[Timing]]:
    """The agent's image (built now if rebuild or if podman lacks it) and the steps' timings."""
    base, tag = base_ref(), agent_image()
    timings: list[Timing] = []
    if rebuild_base or not exists(full_name(base)):
        timings += build_base(base)
    if rebuild or not exists(tag):
        timings.append(build_image(tag, no_cache))
    return tag, timings
