"""btfprog: BTF-typed programs that netdrop loads and attaches itself.

bcc compiles programs of any type but attaches only classic tracepoints, raw
tracepoints, kprobes and fentry/fexit on functions of vmlinux (it looks their
BTF up in vmlinux only). The tracing programs netdrop needs beyond that are
loaded here with BPF_PROG_LOAD (include/uapi/linux/bpf.h), from the
instructions bcc compiled (map fds already in place), and attached with
BPF_RAW_TRACEPOINT_OPEN:
  - tp_btf: the two tracepoints as BTF-typed tracepoints (plain loads instead of
    probe reads, no perf record);
  - fentry/fexit on a module's function (nf_conntrack's __nf_conntrack_confirm):
    attach_btf_id is the function's id in the module's split BTF and
    attach_btf_obj_fd that BTF object (Linux 5.11+).

No bcc here: the caller hands the instructions' address and length.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
from contextlib import suppress
from typing import Any

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())

# enum bpf_cmd
_BPF_MAP_CREATE = 0
_BPF_PROG_LOAD = 5
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_RAW_TRACEPOINT_OPEN = 17
_BPF_BTF_GET_FD_BY_ID = 19
_BPF_BTF_GET_NEXT_ID = 23

_BPF_PROG_TYPE_TRACING = 26
# enum bpf_attach_type
TRACE_RAW_TP = 23
TRACE_FENTRY = 24
TRACE_FEXIT = 25
ATTACH_TYPES = {"tp_btf": TRACE_RAW_TP, "fentry": TRACE_FENTRY, "fexit": TRACE_FEXIT}

_ATTR_SIZE = 128          # bytes of union bpf_attr this module fills, zero-padded
_PROG_LOAD_HEAD = struct.Struct("=IIQQIIQII16sII")
_LICENSE = ctypes.create_string_buffer(b"GPL")
# `r0 = 0; exit`: what a probe loads to learn whether the kernel takes a hook
_RETURN_ZERO = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)


class Refused(Exception):
    """The kernel refused to load or attach a program: the words say why."""


def _syscall() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall


_memlock_raised = False


def _raise_memlock() -> None:
    """Before 5.11 BPF maps and programs are charged to RLIMIT_MEMLOCK (64 KiB by
    default, shared by all of root's BPF users), after to the memory cgroup: raise
    it as bcc and libbpf do, once; where it cannot be raised (no CAP_SYS_RESOURCE)
    the kernel's answer says so."""
    global _memlock_raised
    if not _memlock_raised:
        _memlock_raised = True
        with suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
    """The bpf(2) system call: (result, errno)."""
    if SYS_BPF is None:
        return -1, errno.ENOSYS     # an architecture this module does not know
    _raise_memlock()
    res = int(_syscall()(SYS_BPF, cmd, attr, len(attr)))
    return res, (ctypes.get_errno() if res < 0 else 0)


def _attr() -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(_ATTR_SIZE)


def load_tracing(insns: int, size: int, name: str, attach: str, btf_id: int, btf_obj_fd: int = 0) -> int:
    """Load size bytes of instructions at address insns as a tracing program
    attached (attach: tp_btf, fentry or fexit) to BTF type btf_id, of the BTF
    object btf_obj_fd (0: vmlinux); its fd. Refused: why, with the verifier's
    last line when it had one (asked for only after a refusal)."""
    log = ctypes.create_string_buffer(1 << 16)
    attr = _attr()
    first_err = 0
    for log_level in (0, 1):
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        # prog_flags, prog_name[16], prog_ifindex, expected_attach_type; then at 108
        # attach_btf_id, at 112 attach_btf_obj_fd (attach_prog_fd before 5.11: 0 there).
        fields = (_BPF_PROG_TYPE_TRACING, size // 8, insns, ctypes.addressof(_LICENSE), log_level,
                  len(log) if log_level else 0, ctypes.addressof(log) if log_level else 0, 0, 0,
                  name.encode()[:15], 0, ATTACH_TYPES[attach])
        ctypes.memset(attr, 0, _ATTR_SIZE)
        _PROG_LOAD_HEAD.pack_into(attr, 0, *fields)
        struct.pack_into("=II", attr, 108, btf_id, btf_obj_fd)
        fd, err = bpf(_BPF_PROG_LOAD, attr)
        if fd >= 0:
            return fd
        first_err = first_err or err
        if err not in (errno.EACCES, errno.EINVAL):     # the verifier's log explains only these
            break
    # The first attempt's errno: a log that fills the buffer turns the second's into
    # ENOSPC before 6.4 (bpf_check(), kernel/bpf/verifier.c).
    lines = [line for line in log.value.decode(errors="replace").splitlines() if line.strip()]
    raise Refused(f"{os.strerror(first_err)}{': ' + lines[-1] if lines else ''}")


def attach(prog_fd: int) -> int:
    """Attach a loaded tracing program where it was loaded for (BPF_RAW_TRACEPOINT_OPEN
    without a name: a tp_btf, fentry or fexit program); the link's fd, which
    detaches it when closed."""
    attr = _attr()
    struct.pack_into("=QI", attr, 0, 0, prog_fd)
    fd, err = bpf(_BPF_RAW_TRACEPOINT_OPEN, attr)
    if fd < 0:
        raise Refused(f"attach: {os.strerror(err)}")
    return fd


def probe(attach_type: str, btf_id: int, btf_obj_fd: int = 0) -> str | None:
    """Would the kernel load and attach a program of this attach type on this
    BTF id? None if so (an empty program was loaded, attached for a moment and
    closed: loading alone passes where attaching fails, e.g. without BPF
    trampolines), else why not. Raw system calls: nothing compiled, nothing
    remembered."""
    try:
        fd = load_tracing(ctypes.addressof(_RETURN_ZERO), 16, "nd_probe", attach_type, btf_id, btf_obj_fd)
    except Refused as exc:
        return str(exc)
    try:
        os.close(attach(fd))
    except Refused as exc:
        return str(exc)
    finally:
        os.close(fd)
    return None


def kernel_btf_fd(name: str) -> int | None:
    """An fd of the kernel's BTF object named name (a module's: "nf_conntrack"),
    found among the loaded BTF objects by BPF_BTF_GET_NEXT_ID and their info's
    name (struct bpf_btf_info, 5.11+). None if none is (not loaded, or a kernel
    without module BTF)."""
    next_id = 0
    want = name.encode()
    while True:
        attr = _attr()
        struct.pack_into("=I", attr, 0, next_id)       # start_id
        res, _ = bpf(_BPF_BTF_GET_NEXT_ID, attr)
        if res < 0:
            return None
        next_id = struct.unpack_from("=I", attr, 4)[0]  # next_id
        attr = _attr()
        struct.pack_into("=I", attr, 0, next_id)       # btf_id
        fd, _ = bpf(_BPF_BTF_GET_FD_BY_ID, attr)
        if fd < 0:
            continue                                    # gone meanwhile
        if _btf_name(fd) == want:
            return fd
        os.close(fd)


def _btf_name(fd: int) -> bytes | None:
    """The name in a BTF object's info (struct bpf_btf_info: btf, btf_size, id,
    name, name_len, kernel_btf)."""
    name = ctypes.create_string_buffer(64)
    info = ctypes.create_string_buffer(32)
    struct.pack_into("=QIIQII", info, 0, 0, 0, 0, ctypes.addressof(name), len(name), 0)
    attr = _attr()
    struct.pack_into("=IIQ", attr, 0, fd, len(info), ctypes.addressof(info))   # bpf_fd, info_len, info
    res, _ = bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
    if res < 0:
        return None
    kernel_btf = struct.unpack_from("=I", info, 28)[0]
    return name.value if kernel_btf else None


def map_type_refusal(map_type: int, page_size: int) -> int:
    """errno of creating a one-page map of map_type (0: made, and closed again)."""
    attr = _attr()
    struct.pack_into("=IIII", attr, 0, map_type, 0, 0, page_size)   # map_type, key, value size, max_entries
    fd, err = bpf(_BPF_MAP_CREATE, attr)
    if fd >= 0:
        os.close(fd)
        return 0
    return err


_BPF_MAP_TYPE_RINGBUF = 27    # Linux 5.8 (kernel/bpf/ringbuf.c)


def ringbuf_refusal() -> str | None:
    """Why this kernel cannot give netdrop its event ring buffer (None: it can).
    The ring buffer map type came with Linux 5.8: netdrop's floor. Asked of the
    kernel itself (a one-page map made and closed), not of its version string,
    which distributions' backports make meaningless."""
    err = map_type_refusal(_BPF_MAP_TYPE_RINGBUF, os.sysconf("SC_PAGE_SIZE"))
    if err in (0, errno.ENOSYS):        # ENOSYS: an architecture this module does not know; the load will tell
        return None
    if err == errno.EINVAL:
        return (f"this kernel ({platform.release()}) has no BPF ring buffer: netdrop needs Linux 5.8 or "
                f"newer (a kernel with BTF, CONFIG_DEBUG_INFO_BTF, for kernel types)")
    return f"the kernel refused a BPF map: {os.strerror(err)}"
