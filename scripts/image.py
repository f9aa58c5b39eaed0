"""The agent's image, built for real with podman from deploy/Dockerfile, and run as the DaemonSet says.

Run as root (scripts/setup installs podman, buildah, runc and mmdebstrap):

  scripts/image [build] [--rebuild-base] [--no-cache]
      1. the base image the Dockerfile's FROM names, made from Debian's packages with
         mmdebstrap (no registry is needed, none is asked: --pull=never) and imported
         under that name, unless podman has it already;
      2. deploy/Dockerfile built with podman, tagged as deploy/daemonset.yaml's `image:`.
      Prints how long each step took and the image's size.
  scripts/image lock
      deploy/requirements.txt: the exact versions the Dockerfile installs, with their
      hashes (amd64 and arm64 wheels), for the versions this checkout's .venv runs.
  scripts/image run [--node NAME] [--seconds S]
      the DaemonSet's container as the manifest says (tracer/lab/kubelet.py), its probes
      answered, until Ctrl-C or S seconds; then stopped as the kubelet stops it.
  scripts/image caps
      the capability table: the container started without each capability the manifest
      adds, in turn, and what broke (docs/security.md quotes it).

Builds and runs use the host's network (--network host): podman's default bridge would add
a podman0 bridge and iptables rules to the host's own network namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tracer.lab.image import HOST_CA, ImageError, base_ref, ensure_image, full_name, log, size_mb  # noqa: E402
LOCK = ROOT / "deploy" / "requirements.txt"
# Locked beside pyproject's dependencies: the agent's HTTP server parses requests with h11;
# setuptools and wheel build netdrop itself inside the image (pip's build isolation would
# fetch whatever build backend is newest).
ALSO_LOCKED = ("h11", "setuptools", "wheel")
# The wheels locked besides this machine's own (x86_64): arm64 nodes.
OTHER_PLATFORMS = (("arm64", ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64",
                              "linux_aarch64")),)
PYTHON = "3.11"       # Debian bookworm's python3, the image's


# ---- lock ---------------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_inputs() -> list[str]:
    """pyproject's dependencies and ALSO_LOCKED, each pinned to the version this checkout's
    .venv has (the one the tests ran), else left to pip."""
    from importlib.metadata import PackageNotFoundError, version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    req_names = [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in project["dependencies"]]  # type: ignore[union-attr]
    names = {_norm(n): n for n in req_names}
    names.update({_norm(n): n for n in ALSO_LOCKED})
    pins = []
    for name in names.values():
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return sorted(pins, key=str.lower)


def _report(args: list[str]) -> list[dict[str, object]]:
    """What pip would install, with each file's hash, from PyPI itself (this machine's pip
    configuration, its local mirrors and constraints, left out)."""
    with tempfile.TemporaryDirectory(prefix="netdrop-lock-") as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        # --target: pip's condition for another platform's wheels; nothing is written (--dry-run)
        cmd = [str(ROOT / ".venv" / "bin" / "pip"), "install", "--isolated", "--dry-run", "--ignore-installed",
               "--quiet", "--report", str(report), "--target", str(Path(tmp) / "target"), *args]
        if HOST_CA.is_file():
            cmd[2:2] = ["--cert", str(HOST_CA)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0:
            raise ImageError(f"pip could not resolve the lock: {res.stderr.strip()[-2000:]}")
        return list(json.loads(report.read_text())["install"])


def lock() -> str:
    """deploy/requirements.txt's text."""
    pins = locked_inputs()
    native = _report(pins)
    hashes: dict[tuple[str, str], set[str]] = {}
    for item in native:
        meta = item["metadata"]
        assert isinstance(meta, dict)
        info = item["download_info"]
        assert isinstance(info, dict)
        hashes[(str(meta["name"]), str(meta["version"]))] = {str(info["archive_info"]["hashes"]["sha256"])}
    exact = [f"{n}=={v}" for n, v in hashes]
    for _arch, platforms in OTHER_PLATFORMS:
        opts = ["--only-binary=:all:", "--no-deps", f"--python-version={PYTHON}", "--implementation=cp",
                f"--abi=cp{PYTHON.replace('.', '')}", "--abi=abi3", "--abi=none"]
        opts += [f"--platform={p}" for p in platforms]
        for item in _report([*opts, *exact]):
            meta, info = item["metadata"], item["download_info"]
            assert isinstance(meta, dict) and isinstance(info, dict)
            hashes[(str(meta["name"]), str(meta["version"]))].add(str(info["archive_info"]["hashes"]["sha256"]))
    lines = ["# The exact Python packages deploy/Dockerfile installs (pip --require-hashes --no-deps):",
             "# pyproject's dependencies, h11, and setuptools and wheel to build netdrop, at the versions",
             "# the tests ran, with the hashes of their amd64 and arm64 wheels. Written by `scripts/image lock`.",
             "# bcc is Debian's python3-bpfcc, from the image's apt."]
    for (name, ver), digests in sorted(hashes.items(), key=lambda kv: kv[0][0].lower()):
        lines.append(f"{name}=={ver} \\")
        lines += [f"    --hash=sha256:{d} \\" for d in sorted(digests)[:-1]]
        lines.append(f"    --hash=sha256:{sorted(digests)[-1]}")
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    build = sub.add_parser("build", help="the base image if absent, then deploy/Dockerfile")
    build.add_argument("--rebuild-base", action="store_true", help="make the base again with mmdebstrap")
    build.add_argument("--no-cache", action="store_true", help="build every layer again")
    sub.add_parser("lock", help="write deploy/requirements.txt")
    runp = sub.add_parser("run", help="run the DaemonSet's container on this machine")
    runp.add_argument("--node", default=os.uname().nodename, help="the node name (spec.nodeName)")
    runp.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    sub.add_parser("caps", help="the capability table, measured in the container")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("run as root (podman stores root's images; the container traces the kernel)")
        return 2
    try:
        if args.command == "lock":
            LOCK.write_text(lock())
            log(f"wrote {LOCK.relative_to(ROOT)}")
            return 0
        if args.command in (None, "build"):
            t0 = time.monotonic()
            tag, timings = ensure_image(getattr(args, "rebuild_base", False), getattr(args, "no_cache", False))
            log(f"{tag}: {', '.join(map(str, timings))}; total {time.monotonic() - t0:.1f} s; "
                f"size {size_mb(tag):.0f} MB (base {size_mb(full_name(base_ref())):.0f} MB)")
            return 0
        from image_run import caps_table, run_for
        if args.command == "run":
            return run_for(args.node, args.seconds)
        return caps_table()
    except ImageError as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
