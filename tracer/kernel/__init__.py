"""kernel: netdrop's side of the BPF program, the only place that talks to bcc and the kernel's facts.

Everything that knows the layout of bpf/netdrop.h, the running kernel or bcc lives here; the rest of
netdrop sees Drop records and typed Filters. Modules:

- loader: the Tracer: builds, attaches and fills the program, reads counters and events (TracerSettings).
- bccload: compiles the program with bcc and names its programs' instructions (the only bcc import).
- bpfsource: where bpf/ is, and the one text bcc compiles from it.
- registry: every hook: the tracepoints, and each function hook with its programs, cause and verdict.
- tracepoints: the tracepoints as tp_btf programs, loaded and attached by netdrop itself.
- hooks: how the function hooks of bpf/funchooks.c attach (fentry/fexit or kprobes), and doctor's probe.
- btfprog: BTF-typed programs loaded with bpf() directly (tp_btf, fentry/fexit on modules).
- ringbuf: the events' BPF ring buffer, read through its own mappings or bcc's reader.
- podmaps: the pod maps kept equal to a KernelPods.
- facts: what the running kernel offers (tracefs, tracepoint formats, drop reason names, BTF, kallsyms).
- event: the ctypes mirror of the records in bpf/netdrop.h.
- pktfacts: what the kernel had decided about a dropped packet's destination (the facts byte).
- stacks: the kernel stack of a drop, named frame by frame, checked against its event.
- decode: raw kernel records -> Drop, with names instead of numbers.
- filters: what the kernel side is told to look for (Filters, KernelPods), as typed values for the maps.
"""
