"""bccload: the only module that imports bcc.

It compiles netdrop's BPF source with bcc (against this kernel's headers, or
types from its BTF), names a compiled program's instructions for the programs
netdrop loads itself (btfprog), and keeps libbcc's own error output off the
terminal where a refusal is expected. Everything else sees the compiled
module as an opaque object (`Any`: bcc has no type information).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from ..errors import UserError
from ..node.nsexec import own_working_directory
from ..trust import private_dir
from . import btfprog
from .bpfsource import program_text
from .facts import KernelFacts, bcc_helper_ids, btf_include_tree, kernel_headers

DEFAULT_CACHE = Path(os.environ.get("NETDROP_CACHE", "/var/cache/netdrop"))


def import_bcc() -> ModuleType:
    try:
        import bcc  # noqa: PLC0415 - only this module may import bcc
    except ImportError:
        raise UserError(
            "bcc is not importable: install Debian's python3-bpfcc and run netdrop from "
            "the environment scripts/setup makes (.venv, with system site-packages)"
        ) from None
    return cast(ModuleType, bcc)   # bcc has no type information: to mypy it is Any


def _libbcc_text(maps: Path = Path("/proc/self/maps")) -> bytes:
    """The bytes of the libbcc this process loaded (its helpers.h and copy of
    the UAPI bpf.h are compiled into it: facts.bcc_helper_ids reads them)."""
    import_bcc()
    for line in maps.read_text().splitlines():
        path = line.split(maxsplit=5)[5:]
        if path and "/libbcc.so" in path[0]:
            return Path(path[0]).read_bytes()
    return b""


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """libbcc prints load failures straight to fd 2; a refused probe is expected here."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def kernel_types(facts: KernelFacts, cache_dir: Path) -> tuple[Path | None, list[str]]:
    """Headers of exactly this kernel if installed, else types from BTF."""
    if kernel_headers(facts.release):
        return None, ["-DND_KERNEL_HEADERS"]
    # The cache holds the C headers compiled into the program root loads:
    # only a directory nobody else can change will do.
    private_dir(cache_dir, "cache directory (NETDROP_CACHE)")
    return btf_include_tree(cache_dir, facts.release, helper_ids=bcc_helper_ids(_libbcc_text())), []


def use_kernel_types(include: Path | None) -> None:
    """Point bcc at the include tree kernel_types() made (None: the installed headers)."""
    if include is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(include)


def compile_program(cflags: list[str]) -> Any:
    """netdrop's BPF program compiled by bcc (bpfsource.program_text: fixed
    files of netdrop's, never user text); programs of classic tracepoints are
    attached as bcc loads them."""
    bcc = import_bcc()
    # bcc chdir()s into the headers' directory while it compiles: for this thread only.
    own_working_directory()
    try:
        return bcc.BPF(text=program_text().encode(), cflags=cflags)
    # bcc raises bare Exception (the compiler's output went to stderr)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"could not load the BPF program: {exc}") from None


def program_span(bpf: Any, name: str) -> tuple[int, int]:
    """The address and length of a compiled program's instructions (map fds in place)."""
    lib = import_bcc().lib
    start = lib.bpf_function_start(bpf.module, name.encode())
    size = lib.bpf_function_size(bpf.module, name.encode())
    if not start or not size:
        raise btfprog.Refused(f"{name} is not in the compiled program")
    return int(start), int(size)


def possible_cpus() -> int:
    """CPUs the kernel may bring up: the count per-CPU maps and budgets are sized by."""
    return len(import_bcc().utils.get_possible_cpus())


def lookup_elem() -> Callable[..., int]:
    """libbpf's bpf_lookup_elem(fd, key pointer, value pointer) -> 0 or an error."""
    return cast(Callable[..., int], import_bcc().lib.bpf_lookup_elem)
