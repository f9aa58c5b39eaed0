"""What the running kernel offers, read from tracefs, BTF, /proc and /sys.

Nothing here imports bcc, so it is testable without root on plain files:
every reader takes the path it reads as an argument with the real one as
default.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import itertools
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..env import TRACEFS_CANDIDATES
from ..errors import UserError

BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
KFREE_SKB = ("skb", "kfree_skb")
ICMP_SEND = ("icmp", "icmp_send")
DROP_REASON_PREFIX = "SKB_DROP_REASON_"


def find_tracefs(candidates: Sequence[Path] = TRACEFS_CANDIDATES) -> Path:
    """The mounted tracefs; bcc attaches tracepoints through it."""
    for path in candidates:
        if (path / "events").is_dir():
            return path
    raise UserError(
        "tracefs is not mounted: run 'mount -t tracefs tracefs /sys/kernel/tracing' "
        "(or pass --mount-tracefs to let netdrop do it)"
    )


def mount_tracefs(target: Path = TRACEFS_CANDIDATES[0]) -> Path:
    """Mount tracefs where bcc looks for it. Only done when the user asks."""
    try:
        subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", str(target)],
            check=True, capture_output=True, text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise UserError(f"could not mount tracefs on {target}: {detail.strip()}") from None
    return find_tracefs()


def tracepoint_format(tracefs: Path, category: str, event: str) -> str | None:
    """The tracepoint's format file, or None if this kernel lacks the tracepoint."""
    try:
        # Bytes that are not UTF-8 are replaced: the parsers below read ASCII names only.
        return (tracefs / "events" / category / event / "format").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise UserError(f"cannot read tracepoint {category}:{event}: permission denied (run as root)") from None
    except OSError as exc:
        raise UserError(f"cannot read tracepoint {category}:{event}: {exc.strerror or exc}") from None


def format_fields(fmt: str) -> dict[str, str]:
    """Field name -> C type, from a tracepoint format file (one field per line,
    as trace_format_show prints them: kernel/trace/trace_events.c)."""
    return {m.group(2): m.group(1).strip() for m in _FIELD.finditer(fmt)}


# Within one line, so that text without `;` costs one pass, not one per "field:".
_FIELD = re.compile(r"field:([^;\n]*?)[ \t]+([A-Za-z_]\w*)(\[\d*\])?;")


_SYMBOLIC = re.compile(r"__print_symbolic\(REC->reason,(?P<body>.*)\)\s*$", re.S)
# Enum values are ints: at most 10 digits (int() refuses strings of over 4300).
_PAIR = re.compile(r"\{\s*(-?\d{1,10})\s*,\s*\"([^\"]+)\"\s*\}")
_ENUMERATOR = re.compile(r"(\w+)\s*=\s*(\d{1,10})(?!\d)")


def reasons_from_format(fmt: str) -> dict[int, str]:
    """enum skb_drop_reason as the kfree_skb tracepoint prints it (number -> name
    without the SKB_DROP_REASON_ prefix). The kernel generates this table from
    the enum itself (include/net/dropreason-core.h, DEFINE_DROP_REASON)."""
    m = _SYMBOLIC.search(fmt)
    if not m:
        return {}
    return {int(num): name for num, name in _PAIR.findall(m.group("body"))}


def reasons_from_btf_dump(c_dump: str) -> dict[int, str]:
    """enum skb_drop_reason from `bpftool btf dump ... format c` output."""
    m = re.search(r"enum skb_drop_reason \{(?P<body>[^}]*)\}", c_dump)
    if not m:
        return {}
    reasons = {}
    for name, num in _ENUMERATOR.findall(m.group("body")):
        if name.startswith(DROP_REASON_PREFIX):
            reasons[int(num)] = name[len(DROP_REASON_PREFIX):]
        elif name == "SKB_CONSUMED" or name == "SKB_NOT_DROPPED_YET":
            reasons[int(num)] = name[len("SKB_"):]
    return reasons


class Kallsyms:
    """Kernel text addresses -> function names, from /proc/kallsyms.

    Addresses read as zero when kptr_restrict hides them from us; then
    locations cannot be named and we say so instead of guessing."""

    def __init__(self, addrs: Sequence[int], names: Sequence[str], skipped: int = 0):
        """addrs ascending, names[i] the function at addrs[i]. Kept compact: a
        kernel has over 100,000 text symbols, which as Python ints and strings
        took 24 MiB; as an array and one blob of names, about 3 MiB."""
        self._addrs = array.array("Q", addrs)
        encoded = [n.encode() for n in names]
        self._blob = b"".join(encoded)
        self._ends = array.array("Q", itertools.accumulate(len(n) for n in encoded))
        self._cache: dict[int, str | None] = {}
        self.skipped = skipped      # lines that could not be read

    @classmethod
    def load(cls, path: str | os.PathLike[str] = "/proc/kallsyms") -> Kallsyms:
        """Text symbols (t, T, w, W); a line that is not `ADDRESS TYPE NAME
        [MODULE]` with a 64-bit hex address is skipped and counted. Unreadable:
        no symbols (then locations are not named, as with kptr_restrict)."""
        addrs: list[int] = []
        names: list[str] = []
        skipped = 0
        try:
            with open(path, "rb") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3 or not _KSYM_ADDR.fullmatch(parts[0]) or len(parts[1]) != 1:
                        skipped += 1
                        continue
                    if parts[1] not in _KSYM_TEXT:
                        continue
                    addr = int(parts[0], 16)
                    if addr:
                        addrs.append(addr)
                        names.append(parts[2].decode(errors="replace"))
        except OSError:
            return cls([], [], skipped)
        order = sorted(range(len(addrs)), key=lambda i: (addrs[i], names[i]))   # aliases of one address by name
        return cls([addrs[i] for i in order], [names[i] for i in order], skipped)

    @property
    def usable(self) -> bool:
        return bool(self._addrs)

    def lookup(self, addr: int) -> str | None:
        """Function containing addr, e.g. 'ip_forward', or None."""
        if addr in self._cache:
            return self._cache[addr]
        i = bisect.bisect_right(self._addrs, addr) - 1
        name = None
        if i >= 0:
            start = self._ends[i - 1] if i else 0
            name = self._blob[start:self._ends[i]].decode()
        self._cache[addr] = name
        return name

    def locate(self, addr: int) -> tuple[str, int] | None:
        """The function containing addr and addr's offset in it, e.g.
        ('__udp4_lib_rcv', 0x5a1), or None. Not remembered: stack frames are
        many, and their callers remember whole stacks instead."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        start = self._ends[i - 1] if i else 0
        return self._blob[start:self._ends[i]].decode(), addr - self._addrs[i]


def kernel_symbols(names: Iterable[str], path: str | os.PathLike[str] = "/proc/kallsyms") -> dict[str, int]:
    """Addresses of the named symbols, text or data, of the kernel or a module
    (`ADDRESS TYPE NAME [MODULE]` lines; any other line is passed over). A
    name missing from the answer is not in the kernel (or the module is not
    loaded), or data symbols are not listed (no CONFIG_KALLSYMS_ALL); one
    whose address reads as zero (kptr_restrict) is left out too. Unreadable:
    none. The loader asks for the functions it would hook and for
    nf_conntrack_max. Each name is looked for with bytes.find, not line by
    line: reading the file is most of the ~45 ms."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for name in dict.fromkeys(names):
        needle = b" " + name.encode()
        at = data.find(needle)
        while at >= 0 and name not in found:
            end = at + len(needle)
            start = data.rfind(b"\n", 0, at) + 1
            parts = data[start:end].split()
            if (end == len(data) or data[end:end + 1].isspace()) and len(parts) == 3 and len(parts[1]) == 1 \
                    and _KSYM_ADDR.fullmatch(parts[0]) and int(parts[0], 16):
                found[name] = int(parts[0], 16)
            at = data.find(needle, end)
    return found


_KSYM_ADDR = re.compile(rb"[0-9a-fA-F]{1,16}")
_KSYM_TEXT = (b"t", b"T", b"w", b"W")


@dataclass(frozen=True)
class KernelFacts:
    """What the loader needs to know before compiling the BPF program."""

    release: str
    tracefs: Path
    has_reason: bool
    has_icmp_tp: bool
    reasons: dict[int, str]


def probe_kernel(tracefs: Path) -> KernelFacts:
    fmt = tracepoint_format(tracefs, *KFREE_SKB)
    if fmt is None:
        raise UserError("this kernel has no skb:kfree_skb tracepoint (needs Linux 4.x with CONFIG_TRACEPOINTS)")
    fields = format_fields(fmt)
    has_reason = "reason" in fields
    reasons = reasons_from_format(fmt) if has_reason else {}
    if has_reason and not reasons and BTF_VMLINUX.exists():
        reasons = reasons_from_btf_dump(btf_c_dump())
    return KernelFacts(
        release=platform.release(),
        tracefs=tracefs,
        has_reason=has_reason,
        has_icmp_tp=tracepoint_format(tracefs, *ICMP_SEND) is not None,
        reasons=reasons,
    )


# BTF (include/uapi/linux/btf.h): a header, then type records, then strings.
# Each record is struct btf_type (name_off, info, size/type: 12 bytes) and a
# tail whose length depends on its kind (info >> 24 & 0x1f) and vlen (info &
# 0xffff): (fixed bytes, bytes per vlen item) by kind number.
_BTF_MAGIC = 0xEB9F
_BTF_KIND_TYPEDEF = 8
_BTF_TAIL = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
             9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0),
             17: (4, 0), 18: (0, 0), 19: (0, 12)}
_BTF_TYPE = struct.Struct("<III")


def btf_tracepoint_ids(events: Iterable[str], btf: Path = BTF_VMLINUX) -> dict[str, int]:
    """The BTF type id of each tracepoint's `btf_trace_<event>` typedef: what a
    BTF-typed tracepoint program (tp_btf) names as its attach_btf_id. Events the
    kernel's BTF lacks, and everything when the file is unreadable or malformed,
    are left out: the loader then attaches the classic tracepoint."""
    try:
        data = btf.read_bytes()
    except OSError:
        return {}
    return _btf_typedef_ids(data, {f"btf_trace_{e}": e for e in events})


BTF_DIR = BTF_VMLINUX.parent
_BTF_KIND_FUNC = 12


@dataclass(frozen=True)
class BtfFunction:
    """Where a kernel function's BTF is: what an fentry/fexit program names as
    its attach_btf_id, and the BTF object that holds it (None: the kernel's own,
    vmlinux; else the module's, whose ids continue vmlinux's: split BTF)."""

    btf_id: int
    module: str | None


def btf_function(func: str, module: str | None, btf_dir: Path = BTF_DIR) -> BtfFunction | None:
    """func's BTF, in vmlinux or else in the BTF of `module` (loaded modules only:
    /sys/kernel/btf/<module> exists while it is loaded, on kernels built with
    CONFIG_DEBUG_INFO_BTF_MODULES, 5.11+). None where neither has it."""
    try:
        base = (btf_dir / "vmlinux").read_bytes()
    except OSError:
        return None
    found = _btf_ids(base, {func: func}, _BTF_KIND_FUNC)
    if func in found:
        return BtfFunction(found[func], None)
    if module is None or "/" in module or module.startswith("."):
        return None
    try:
        split = (btf_dir / module).read_bytes()
    except OSError:
        return None
    found = _btf_ids(split, {func: func}, _BTF_KIND_FUNC, base=base)
    return BtfFunction(found[func], module) if func in found else None


def _btf_typedef_ids(data: bytes, wanted: dict[str, str]) -> dict[str, int]:
    return _btf_ids(data, wanted, _BTF_KIND_TYPEDEF)


def _btf_sections(data: bytes) -> tuple[int, int, int, int] | None:
    """(first type record, end of the records, string section, its length) of a
    BTF blob, or None if it is not one."""
    if len(data) < 24:
        return None
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != _BTF_MAGIC or hdr_len < 24 or hdr_len > len(data):
        return None
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    types, strings = hdr_len + type_off, hdr_len + str_off
    if types + type_len > len(data) or strings + str_len > len(data):
        return None
    return types, types + type_len, strings, str_len


def _btf_records(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(name offset, kind, where the next record starts) of each type record in
    file order; stops at a kind this reader does not know (its length is
    unknown) or the end."""
    pos = start
    while pos + _BTF_TYPE.size <= end:
        name_off, info, _size = _BTF_TYPE.unpack_from(data, pos)
        kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
        tail = _BTF_TAIL.get(kind)
        if tail is None:
            return
        pos += _BTF_TYPE.size + tail[0] + tail[1] * vlen
        yield name_off, kind, pos


_BASE_COUNTS: dict[tuple[int, bytes], int | None] = {}


def _btf_count(data: bytes) -> int | None:
    """The number of types in a BTF blob (None: malformed or of an unknown kind),
    remembered: vmlinux's takes a walk over ~150,000 records."""
    key = (len(data), hashlib.sha256(data[:4096]).digest())
    if key not in _BASE_COUNTS:
        sec = _btf_sections(data)
        count: int | None = None
        if sec is not None:
            n, at = 0, sec[0]
            for n, (_name, _kind, at) in enumerate(_btf_records(data, sec[0], sec[1]), start=1):  # noqa: B007
                pass
            count = n if at == sec[1] else None     # every record walked, or the ids after are unknown
        _BASE_COUNTS.clear()        # one base at a time: vmlinux's
        _BASE_COUNTS[key] = count
    return _BASE_COUNTS[key]


def _btf_ids(data: bytes, wanted: dict[str, str], kind: int, base: bytes | None = None) -> dict[str, int]:
    """The type id of each record of `kind` whose name is a key of wanted (the
    answer keyed by wanted's values). base: the vmlinux blob that data, a
    module's split BTF, continues: its ids count on from base's last, and its
    names may be base's strings (offsets below base's string length) or its own
    (offsets from there on)."""
    sec = _btf_sections(data)
    if sec is None:
        return {}
    types, end, strings, str_len = sec
    first_id, own_strings_at = 1, 0
    tables = [(data[strings:strings + str_len], 0)]
    if base is not None:
        base_sec, base_count = _btf_sections(base), _btf_count(base)
        if base_sec is None or base_count is None:
            return {}
        first_id, own_strings_at = base_count + 1, base_sec[3]
        tables = [(base[base_sec[2]:base_sec[2] + base_sec[3]], 0), (tables[0][0], own_strings_at)]
    # The names' offsets first (one search each), then one walk over the records.
    offsets: dict[int, str] = {}
    for name, key in wanted.items():
        needle = b"\0" + name.encode() + b"\0"
        for table, at_base in tables:
            at = (b"\0" + table).find(needle)      # a split table need not start with a NUL
            if at >= 0:
                offsets[at_base + at] = key
    found: dict[str, int] = {}
    for type_id, (name_off, rec_kind, _next) in enumerate(_btf_records(data, types, end), start=first_id):
        if not offsets:
            break
        if rec_kind == kind and name_off in offsets:
            found[offsets.pop(name_off)] = type_id
    return found


def btf_c_dump(btf: Path = BTF_VMLINUX) -> str:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        return subprocess.run(
            [bpftool, "btf", "dump", "file", str(btf), "format", "c"],
            check=True, capture_output=True, text=True, errors="replace",
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(f"could not read kernel types from {btf} with bpftool: {exc}") from None


# bcc force-includes <linux/kconfig.h> from BCC_KERNEL_SOURCE first and then
# its helpers, which include the headers below. With BTF we have every kernel
# type in one file: kconfig.h pulls it in and the others are left empty.
_KCONFIG_H = """\
/* generated by netdrop from {btf}: kernel types from BTF, no kernel headers */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "../vmlinux.h"
/* UAPI typedef the BTF dump lacks (it only records types the kernel uses) */
typedef __u64 __aligned_u64;
/* bcc's helpers refuse to build without it; the kernel has it if BTF is here */
#define CONFIG_BPF_SYSCALL 1
/* vmlinux.h already holds the UAPI bpf enums: keep bcc's own copy out */
#define _UAPI__LINUX_BPF_H__
/* helper ids bcc's helpers.h names that this kernel's enum bpf_func_id lacks */
#include "../bcc_helper_ids.h"
"""
_EMPTY_HEADERS = (
    "linux/log2.h",
    "uapi/linux/bpf.h",
    "uapi/linux/if_packet.h",
    "uapi/linux/ptrace.h",
)


def kernel_version_code(release: str) -> int:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return 0
    a, b, c = (int(x or 0) for x in m.groups())
    return (a << 16) + (b << 8) + min(c, 255)


# bcc's helpers.h declares every helper bcc knows as `(void *)BPF_FUNC_<name>`,
# names that its own copy of the UAPI bpf.h defines. That copy is kept out (the
# BTF dump holds the kernel's enum bpf_func_id), and a kernel older than bcc
# lacks the newest ids: 6.1 has no BPF_FUNC_cgrp_storage_get (6.2), 5.10 none of
# get_func_ip (5.15) and after. The ids are UAPI, fixed once given, so the
# missing ones are declared with the numbers bcc's copy gives them; no helper a
# kernel lacks is ever called (the verifier would refuse it).
_HELPER_MAPPER = re.compile(rb"#define ___BPF_FUNC_MAPPER\(FN, ctx\.\.\.\)[^\n]*\n")
_HELPER_ENTRY = re.compile(rb"\s*FN\((\w{1,64}), (\d{1,5}), ##ctx\)[\t ]*\\?\n")
_OLD_HELPER_MAPPER = re.compile(rb"#define __BPF_FUNC_MAPPER\(FN\)[\t ]*\\\n")
_OLD_HELPER_ENTRY = re.compile(rb"\s*FN\((\w{1,64})\),?[\t ]*\\?\n")


def bcc_helper_ids(library: bytes) -> dict[str, int]:
    """BPF helper name -> id as the copy of the UAPI bpf.h compiled into libbcc
    lists them (its ___BPF_FUNC_MAPPER: `FN(name, id, ##ctx)`, or, before Linux
    6.2's headers, __BPF_FUNC_MAPPER's `FN(name)` in id order). Empty when
    neither is found."""
    m, entry, numbered = _HELPER_MAPPER.search(library), _HELPER_ENTRY, True
    if m is None:
        m, entry, numbered = _OLD_HELPER_MAPPER.search(library), _OLD_HELPER_ENTRY, False
        if m is None:
            return {}
    ids: dict[str, int] = {}
    pos = m.end()
    while (e := entry.match(library, pos)) is not None:
        name = e.group(1).decode()
        ids[name] = int(e.group(2)) if numbered else len(ids)
        pos = e.end()
    return ids


def missing_helper_ids(c_dump: str, bcc_ids: dict[str, int]) -> str:
    """C declaring each BPF_FUNC_<name> of bcc's that the kernel's BTF dump does
    not define (an enum of its own: enumerators cannot be added to the kernel's)."""
    have = set(re.findall(r"\bBPF_FUNC_(\w+) = \d", c_dump))
    missing = [(name, num) for name, num in bcc_ids.items() if name not in have]
    if not missing:
        return "/* none: this kernel has every helper id bcc knows */\n"
    body = "".join(f"\tBPF_FUNC_{name} = {num},\n" for name, num in missing)
    return f"enum netdrop_bcc_helper_ids {{\n{body}}};\n"


def btf_include_tree(cache_dir: Path, release: str | None = None, btf: Path = BTF_VMLINUX,
                     helper_ids: dict[str, int] | None = None) -> Path:
    """A directory bcc accepts as BCC_KERNEL_SOURCE, built from the running
    kernel's BTF and the helper ids of the bcc that compiles against it
    (bcc_helper_ids). Cached by a hash of both, so a new kernel or a new bcc
    gets its own."""
    if not btf.exists():
        raise UserError(
            f"no kernel types: {btf} is missing (kernel built without CONFIG_DEBUG_INFO_BTF) "
            f"and there are no headers in /lib/modules/{release or platform.release()}/build"
        )
    release = release or platform.release()
    helper_ids = helper_ids or {}
    digest = hashlib.sha256(btf.read_bytes())
    digest.update(repr(sorted(helper_ids.items())).encode())
    root = cache_dir / f"kernel-{release}-{digest.hexdigest()[:16]}"
    complete = root / "include" / "linux" / "kconfig.h"     # written last
    if complete.exists():
        return root
    # Built in a private directory of its own and renamed into place whole: bcc
    # never sees a half-written tree, and two netdrops starting at once do not
    # write into each other's.
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{root.name}."))
    try:
        _write_include_tree(tmp, btf, release, helper_ids)
        if root.exists() and not complete.exists():     # left incomplete by an older version
            shutil.rmtree(root)
        os.replace(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not complete.exists():       # no other run finished one meanwhile either
            raise
    return root


def _write_include_tree(tmp: Path, btf: Path, release: str, helper_ids: dict[str, int]) -> None:
    inc = tmp / "include"
    (inc / "linux").mkdir(parents=True)
    dump = btf_c_dump(btf)
    (inc / "vmlinux.h").write_text(dump)
    (inc / "bcc_helper_ids.h").write_text(missing_helper_ids(dump, helper_ids))
    (inc / "linux" / "version.h").write_text(
        f"#define LINUX_VERSION_CODE {kernel_version_code(release)}\n"
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
    )
    (inc / "asm").mkdir()
    (inc / "asm" / "page.h").write_text(f"#define PAGE_SIZE {os.sysconf('SC_PAGE_SIZE')}\n")
    for name in _EMPTY_HEADERS:
        (inc / name).parent.mkdir(parents=True, exist_ok=True)
        (inc / name).write_text("")
    (inc / "linux" / "kconfig.h").write_text(_KCONFIG_H.format(btf=btf))


def kernel_headers(release: str | None = None) -> Path | None:
    """Headers of exactly the running kernel, if installed."""
    build = Path("/lib/modules") / (release or platform.release()) / "build"
    return build if (build / "include" / "linux" / "kconfig.h").exists() else None


def type_flags(include: Path | None) -> list[str]:
    """What the BPF program must know about this kernel's types: the number
    of SKB_CONSUMED (not a drop), and whether sk_buff has _nfct (only with
    CONFIG_NF_CONNTRACK). With kernel headers: no SKB_CONSUMED filter, _nfct assumed."""
    consumed, nfct = 0xFFFFFFFF, True   # 0xFFFFFFFF: no such value, never matches a u32 reason
    if include is not None:
        text = (include / "include" / "vmlinux.h").read_text()
        m = re.search(r"\bSKB_CONSUMED = (\d+)", text)
        if m:
            consumed = int(m.group(1))
        skb = re.search(r"^struct sk_buff \{.*?^\};", text, re.S | re.M)
        nfct = bool(skb and "_nfct;" in skb.group(0))
    return [f"-DND_REASON_CONSUMED={consumed}", f"-DND_HAVE_NFCT={int(nfct)}"]


def not_specified(reasons: dict[int, str]) -> int:
    """The number of SKB_DROP_REASON_NOT_SPECIFIED on this kernel (0 on 5.17-5.19,
    2 since SKB_NOT_DROPPED_YET and SKB_CONSUMED came first), or 0xFFFFFFFF
    (no such value: never matches a u32 reason) if the kernel names none."""
    return next((code for code, name in reasons.items() if name == "NOT_SPECIFIED"), 0xFFFFFFFF)
