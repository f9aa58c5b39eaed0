"""podmaps: the pod maps (bpf/maps.h) kept equal to a KernelPods.

Each map has its own key type (a namespace inode, (netns, ifindex), an
address, a port); a write that does not fit (the map is full) is remembered
and tried again on the next change, and said once.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from . import event as ev
from .filters import KernelPods, ip_key_bytes

# A KernelPods key: an int, (netns, ifindex) or an address, per map.
PodKey = Any


def ip_key(addr: str) -> ev.NdIpKey:
    return ev.NdIpKey((ctypes.c_uint8 * 16)(*ip_key_bytes(addr)))


# The pod maps and how a KernelPods key becomes a map key.
_POD_MAPS: dict[str, Callable[[PodKey], object]] = {
    "pod_netns": ctypes.c_uint32,
    "pod_veth": lambda v: ev.NdIfKey(*v),
    "pod_ip": ip_key,
    "pod_hostport": ctypes.c_uint16,
    "node_ip": ip_key,            # a set: the value is a plain 1
}


def _entries(kp: KernelPods | None) -> dict[str, dict[PodKey, tuple[int, bool]]]:
    if kp is None:
        return {name: {} for name in _POD_MAPS}
    return {"pod_netns": kp.netns, "pod_veth": kp.veth, "pod_ip": kp.ips,
            "pod_hostport": kp.hostports, "node_ip": dict.fromkeys(kp.node_ips, (0, True))}


class PodMaps:
    """The pod maps of one compiled module (bcc's)."""

    def __init__(self, bpf: Any, map_entries: int, warn: Callable[[str], None]) -> None:
        self._bpf, self._map_entries, self._warn = bpf, map_entries, warn
        self.full_maps: set[str] = set()
        self._unwritten: dict[str, set[PodKey]] = {}

    def replace(self, old: KernelPods | None, pods: KernelPods | None) -> None:
        """From old's contents to pods'. New entries go in before stale ones go
        out, so a pod that stays is never missing from the maps, not even for a moment."""
        new, had = _entries(pods), _entries(old)
        for name, to_key in _POD_MAPS.items():
            table = self._bpf[name.encode()]
            unwritten = self._unwritten.setdefault(name, set())
            changed = [key for key, val in new[name].items() if had[name].get(key) != val or key in unwritten]
            unwritten.clear()
            _write(name, table, to_key, changed, new[name], unwritten)
            for key in had[name].keys() - new[name].keys():
                with suppress(KeyError):   # never written (its map was full): nothing to delete
                    del table[to_key(key)]
            if unwritten:   # room freed by the deletions above
                retry, unwritten_now = list(unwritten), set[PodKey]()
                _write(name, table, to_key, retry, new[name], unwritten_now)
                self._unwritten[name] = unwritten_now
                if unwritten_now and name not in self.full_maps:
                    self.full_maps.add(name)
                    self._warn(f"the kernel's {name} map is full ({self._map_entries} entries): "
                               f"{len(unwritten_now)} pod entries are not in it, so drops there are counted "
                               f"without their pod (counts stay exact); more pods than netdrop was built for")


def _write(name: str, table: Any, to_key: Callable[[PodKey], object], keys: list[PodKey],
           values: dict[PodKey, tuple[int, bool]], unwritten: set[PodKey]) -> None:
    """Write keys' entries into table (a bcc map); what does not fit goes into unwritten."""
    for key in keys:
        tag, selected = values[key]
        value = ctypes.c_uint8(1) if name == "node_ip" else ev.NdPodVal(tag, int(selected))
        try:
            table[to_key(key)] = value
        # bcc raises a bare Exception for a failed update; E2BIG: the map is full
        except Exception:  # noqa: BLE001
            unwritten.add(key)
