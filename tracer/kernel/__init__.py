"""kernel: netdrop's side of the BPF program, the only place that talks to bcc and the kernel's facts.

Everything that knows the layout of bpf/netdrop.h, the running kernel or bcc lives here; the rest of
netdrop sees Drop records and typed Filters. Modules:

- loader: compiles bpf/netdrop.c with bcc, attaches it, fills its maps, reads counters and events (the only bcc import).
- facts: what the running kernel offers (tracefs, tracepoint formats, drop reason names, BTF, kallsyms).
- event: the ctypes mirror of the records in bpf/netdrop.h.
- decode: raw kernel records -> Drop, with names instead of numbers.
- filters: what the user asked to see, as typed values for the BPF filter maps.
"""
