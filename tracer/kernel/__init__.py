"""kernel: netdrop's side of the BPF program, the only place that talks to bcc and the kernel's facts.

Everything that knows the layout of bpf/netdrop.h, the running kernel or bcc lives here; the rest of
netdrop sees Drop records and typed Filters. Modules:

- loader: compiles bpf/netdrop.c with bcc, attaches it, fills its maps, reads counters and events (the only bcc import).
- ringbuf: the events' BPF ring buffer, read through its own mappings.
- btfprog, hooks: the BTF-typed programs netdrop loads itself, and the function hooks of bpf/funchooks.c.
- facts: what the running kernel offers (tracefs, tracepoint formats, drop reason names, BTF, kallsyms).
- event: the ctypes mirror of the records in bpf/netdrop.h.
- pktfacts: what the kernel had decided about a dropped packet's destination (the facts byte).
- stacks: the kernel stack of a drop, named frame by frame, checked against its event.
- decode: raw kernel records -> Drop, with names instead of numbers.
- filters: what the user asked to see, as typed values for the BPF filter maps.
"""
