"""Record golden data for tests/unit: raw nd_event bytes from the real kernel while
the simulated node plays each case, the tracepoint format and a kallsyms excerpt.

Run as root after changing bpf/netdrop.h: scripts/record-golden, then read the
diff of tests/golden/events.jsonl: the "expected" records are what decode and
classify make of the new bytes, and a person must check that they are right.
"""

import json
import time
from pathlib import Path

from tracer.explain import classify
from tracer.kernel import decode, loader
from tracer.kernel.facts import Kallsyms, find_tracefs, probe_kernel, reasons_from_format
from tracer.kernel.filters import Filters
from tracer.lab.cases import CASES
from tracer.lab.node import SimNode
from tracer.sinks import jsonout

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
RECORDED = ("mtu", "forward-drop", "udp-closed", "udp6-closed", "tcp-closed", "no-route")
WANT = {"ip_forward", "nft_do_chain", "__udp4_lib_rcv", "__udp6_lib_rcv", "tcp_v4_rcv", "ip_error"}


def main() -> None:
    tracefs = find_tracefs()
    facts = probe_kernel(tracefs)
    node = SimNode.create("ndgolden", with_api=False)
    try:
        inodes = frozenset(node.netns_inodes().values())
        with loader.Tracer(facts, Filters(netns=inodes), loader.TracerSettings(max_event_rate=0)) as tracer:
            for name in RECORDED:
                CASES[name].play(node, 1)
            time.sleep(0.3)
            raws = tracer.poll(100)
    finally:
        node.destroy()
    ks = Kallsyms.load()
    fmt = (tracefs / "events" / "skb" / "kfree_skb" / "format").read_text()
    dec = decode.Decoder(reasons_from_format(fmt), ks, mono_to_wall=0.0)
    lines, syms = [], set()
    for raw, _packet in raws:
        loc = ks.lookup(raw.location_raw)
        if loc in WANT and loc not in syms:
            syms.add(loc)
            drop = dec.decode(raw)
            rec = jsonout.drop_record(drop, classify.classify(drop))
            del rec["hint"], rec["pod"], rec["direction"], rec["detail"]
            lines.append(json.dumps({"raw_hex": bytes(raw).hex(), "expected": rec}))
    assert syms == WANT, f"cases did not produce drops at {WANT - syms}"
    kallsyms = Path("/proc/kallsyms").read_text().splitlines()
    keep = [f"{a}\n{b}" for a, b in zip(kallsyms, kallsyms[1:], strict=False)   # each symbol and the next
            if a.split()[2] in syms and a.split()[1] in "tT"]
    (GOLDEN / "events.jsonl").write_text("\n".join(lines) + "\n")
    (GOLDEN / "kallsyms").write_text("\n".join(keep) + "\n")
    (GOLDEN / "kfree_skb.format").write_text(fmt)
    print(f"recorded {len(lines)} events into {GOLDEN}")


if __name__ == "__main__":
    main()
