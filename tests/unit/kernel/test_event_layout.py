"""bpf/netdrop.h and tracer/kernel/event.py must describe the same bytes.

event.py mirrors the structs Python builds or unpacks itself (events, filter
configuration, pod map keys and values); the maps Python only reads through
bcc (counters, per-CPU state) bcc describes from the compiled program."""

import ctypes
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.kernel import bpfsource, event

C_TYPES = {"u8": 1, "u16": 2, "u32": 4, "s32": 4, "u64": 8, "char": 1}


def parse_structs(text: str) -> dict[str, list[tuple[str, int, int]]]:
    """struct name -> [(field, offset, size)] with C's natural alignment."""
    structs = {}
    for name, body in re.findall(r"struct (\w+) \{(.*?)\};", text, re.S):
        fields, offset, max_align = [], 0, 1
        for ctype, fname, count in re.findall(r"^\s*(\w+)\s+(\w+)(?:\[(\w+)\])?;", body, re.M):
            size = C_TYPES[ctype]
            n = (int(count) if count.isdigit()
                 else int(re.search(rf"#define {count} (\d+)", text).group(1)) if count else 1)
            offset = (offset + size - 1) // size * size
            fields.append((fname, offset, size * n))
            offset += size * n
            max_align = max(max_align, size)
        structs[name] = fields + [("<sizeof>", (offset + max_align - 1) // max_align * max_align, 0)]
    return structs


def test_every_struct_field_matches_the_header():
    text = bpfsource.HEADER.read_text()
    structs = parse_structs(text)
    assert set(event.MIRRORS) <= set(structs)
    for cname, mirror in event.MIRRORS.items():
        py = [(f.removesuffix("_raw"), getattr(mirror, f).offset, getattr(mirror, f).size)
              for f, _ in mirror._fields_]
        py.append(("<sizeof>", ctypes.sizeof(mirror), 0))
        assert py == structs[cname], cname


def test_flag_and_index_constants_match_the_header():
    text = bpfsource.HEADER.read_text()
    defined = {m[0]: int(m[1], 0) for m in re.findall(r"#define (ND_\w+)\s+(0x[0-9a-fA-F]+|\d+)", text)}
    mirrored = {k: v for k, v in vars(event).items() if k.startswith("ND_")}
    assert defined == mirrored


def test_layout_parser_sees_padding():
    # The parser itself must notice a misaligned field, or the test above proves nothing.
    s = parse_structs("struct t {\n\tu8 a;\n\tu32 b;\n};")["t"]
    assert s == [("a", 0, 1), ("b", 4, 4), ("<sizeof>", 8, 0)]


@given(st.binary(min_size=ctypes.sizeof(event.NdEvent), max_size=ctypes.sizeof(event.NdEvent)))
def test_one_struct_step_reads_what_the_ctypes_mirror_reads(data):
    # decode.py unpacks records with event.EVENT (derived from the mirror): any
    # bytes must give every field the value the ctypes mirror gives it.
    mirror = event.NdEvent.from_buffer_copy(data)
    values = dict(zip(event.EVENT_FIELDS, event.EVENT.unpack(data), strict=True))
    for name, ctype in event.NdEvent._fields_:
        want = getattr(mirror, name)
        if issubclass(ctype, ctypes.Array):
            want = bytes(want) if ctype._type_ is ctypes.c_uint8 else data[getattr(event.NdEvent, name).offset:][
                :ctypes.sizeof(ctype)]
        assert values[name] == want, name


def test_record_struct_follows_every_mirror_and_its_padding():
    for mirror in event.MIRRORS.values():
        if any(issubclass(t, ctypes.Array) and t._type_ not in (ctypes.c_uint8, ctypes.c_char)
               for _, t in mirror._fields_):
            with pytest.raises(TypeError):      # said, not misread
                event.record_struct(mirror)
            continue
        s = event.record_struct(mirror)
        assert s.size == ctypes.sizeof(mirror)
        scalars = [f for f, t in mirror._fields_ if not issubclass(t, ctypes.Array)]
        m = mirror()
        for i, name in enumerate(scalars):
            setattr(m, name, i + 1)
        got = dict(zip([f for f, _ in mirror._fields_], s.unpack(bytes(m)), strict=True))
        assert [got[name] for name in scalars] == [i + 1 for i in range(len(scalars))], mirror.__name__
