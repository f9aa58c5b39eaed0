"""jsonvalues: values out of JSON nothing vouches for, each as the type its reader expects or nothing.

`ip -j`, bpftool and the API's annotations hand over JSON that pods and node
users shape (interface names, annotations): a reader takes what it expects
through these and treats anything else as absent, never as an error.
"""

from __future__ import annotations

from typing import Any


def u32(v: object) -> int | None:
    """A number the kernel keeps in 32 bits (an index, an id, a port, a prefix
    length, a VNI): an int, never a bool (JSON true is no count), 0 <= v < 2**32."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32 else None


def sub(obj: object, *keys: str) -> dict[str, Any]:
    """obj[k1][k2]... as an object, {} where a level is missing or not an object."""
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def string(obj: dict[str, Any], key: str) -> str | None:
    """obj[key] if it is a string."""
    v = obj.get(key)
    return v if isinstance(v, str) else None
