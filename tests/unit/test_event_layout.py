"""bpf/netdrop.h and tracer/event.py must describe the same bytes."""

import ctypes
import re

from tracer.kernel import event

C_TYPES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "char": 1}


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
    text = event.HEADER.read_text()
    structs = parse_structs(text)
    assert set(structs) == set(event.MIRRORS)
    for cname, mirror in event.MIRRORS.items():
        py = [(f.removesuffix("_raw"), getattr(mirror, f).offset, getattr(mirror, f).size)
              for f, _ in mirror._fields_]
        py.append(("<sizeof>", ctypes.sizeof(mirror), 0))
        assert py == structs[cname], cname


def test_flag_and_index_constants_match_the_header():
    text = event.HEADER.read_text()
    defined = {m[0]: int(m[1], 0) for m in re.findall(r"#define (ND_\w+)\s+(0x[0-9a-fA-F]+|\d+)", text)}
    mirrored = {k: v for k, v in vars(event).items() if k.startswith("ND_")}
    assert defined == mirrored


def test_layout_parser_sees_padding():
    # The parser itself must notice a misaligned field, or the test above proves nothing.
    s = parse_structs("struct t {\n\tu8 a;\n\tu32 b;\n};")["t"]
    assert s == [("a", 0, 1), ("b", 4, 4), ("<sizeof>", 8, 0)]
