"""stacks: the kernel stack of a drop, named frame by frame.

The BPF program records the kernel stack of each event it sends in a stack
map (bpf/netdrop.c, `stacks`) and puts the stack's id in the event. The
loader reads the frames (return addresses) of an id as the event is read;
this module turns them into "function+0xoffset" lines, once per distinct
stack.

An id is the stack's hash modulo the map's slots, and a new stack whose hash
lands on a taken slot replaces the one there (BPF_F_REUSE_STACKID): an id
read a moment after its event may already hold another stack. Each stack is
checked against its event: the kfree_skb tracepoint's location is the return
address into the function that freed the packet (kfree_skb_reason() ->
sk_skb_reason_drop(), net/core/skbuff.c: __builtin_return_address(0)), so it
is one of the stack's frames. A stack without it is another packet's and is
not used. The frames above it are the tracing machinery (the BPF program,
bpf_trace_run*, the tracepoint and the free function itself) and are cut:
a stack starts with the function that dropped the packet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .facts import Kallsyms

Stack = tuple[str, ...]     # frames, innermost first: "__udp4_lib_rcv+0x5a1", ... ("?" where kallsyms has no name)

NAMED_STACKS = 512          # distinct stacks remembered with their names (LRU)
# A frame further than this past the nearest symbol is not in it (code kallsyms
# does not list, past the last symbol of a region): named "?", not misnamed.
MAX_OFFSET = 1 << 20
UNKNOWN = "?"


def frame_name(kallsyms: Kallsyms, addr: int) -> str:
    """"function+0xoffset" of a return address, or "?". Never the address
    itself: a report that travels must not carry where the kernel is mapped
    (KASLR)."""
    found = kallsyms.locate(addr)
    if found is None or found[1] > MAX_OFFSET:
        return UNKNOWN
    name, offset = found
    return f"{name}+{offset:#x}"


def symbolize(kallsyms: Kallsyms, frames: tuple[int, ...], location: int) -> Stack | None:
    """The named stack from the event's location down, or None if the frames
    do not hold the location (the slot held another stack by the time it was
    read)."""
    try:
        top = frames.index(location)
    except ValueError:
        return None
    return tuple(frame_name(kallsyms, addr) for addr in frames[top:])


class Symbolizer:
    """A stack id and its event's location -> the named stack, or None.

    read(stack_id) gives the id's frames as the kernel holds them now (the
    loader's Tracer.stack_frames); each distinct (location, frames) is named
    once and kept in a bounded LRU."""

    def __init__(self, kallsyms: Kallsyms, read: Callable[[int], tuple[int, ...] | None],
                 entries: int = NAMED_STACKS) -> None:
        self.kallsyms = kallsyms
        self._read = read
        self._entries = entries
        self._named: OrderedDict[tuple[int, tuple[int, ...]], Stack | None] = OrderedDict()
        # (stack id, location) -> the frames last read for it and their stack: the
        # loader hands out the same frames object for an id within a batch, so
        # an event of a storm costs an identity check instead of hashing its frames.
        self._last: dict[tuple[int, int], tuple[tuple[int, ...], Stack | None]] = {}
        self.replaced = 0       # stacks that were another packet's when read: left out

    def __call__(self, stack_id: int, location: int) -> Stack | None:
        if stack_id < 0 or not location:
            return None
        frames = self._read(stack_id)
        if not frames:
            return None
        last = self._last.get((stack_id, location))
        if last is not None and last[0] is frames:
            if last[1] is None:
                self.replaced += 1
            return last[1]
        key = (location, frames)
        named = self._named
        if key in named:
            named.move_to_end(key)
            stack = named[key]
        else:
            stack = named[key] = symbolize(self.kallsyms, frames, location)
            if len(named) > self._entries:
                named.popitem(last=False)
        if len(self._last) >= self._entries:
            self._last.clear()
        self._last[(stack_id, location)] = (frames, stack)
        if stack is None:
            self.replaced += 1
        return stack
