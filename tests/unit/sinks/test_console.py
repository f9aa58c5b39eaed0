"""The live console, rendered into a string as a user would read it."""

import io
import re
from datetime import UTC, datetime, timedelta

import pytest

from tracer.env import Environment
from tracer.explain import classify
from tracer.explain.verdict import Verdict
from tracer.groups import Groups
from tracer.kernel import decode, event, facts, pktfacts
from tracer.kernel.loader import Hook, Stats
from tracer.pods.attribute import Attribution, PodRef
from tracer.sinks import console, tui
from tracer.sinks.keys import UiState

from ..helpers import GOLDEN, golden_groups, render_text


# ---------------------------------------------------------------- 30 groups

NO_SOCKET, PURGE, FWD = 3, 77, 5
UDP, PURGE_AT, FWD_AT = 0x1000, 0x2000, 0x3000
BENIGN_COUNTS = (500, 300, 200)       # three QUEUE_PURGE groups, no pod: hidden, counted
NETLINK = pktfacts.make(pktfacts.PACKET_HOST, event.ND_DST_NOT_IP)   # what a netlink socket's purge has


def pod(i: int) -> PodRef:
    return PodRef("default", f"pod-{i:02d}", f"uid-{i}", "node-a")


def thirty() -> tuple[Groups, list[str]]:
    """27 groups of pods pod-00..pod-26 and 3 benign ones; the pod labels in rank order
    (recent rate, then count). Counts fall with i, rates rise with i: the ranks differ."""
    dec = decode.Decoder({NO_SOCKET: "NO_SOCKET", PURGE: "QUEUE_PURGE", FWD: "NETFILTER_DROP"},
                         facts.Kallsyms([UDP, PURGE_AT, FWD_AT], ["__udp4_lib_rcv", "skb_queue_purge_reason",
                                                                  "nft_do_chain"]))
    groups = Groups(dec, pod_of_tag=lambda tag: Attribution(pod(tag >> 2), "to-pod"))
    before, after = {}, {}
    for i in range(27):
        key = (100 + i, NO_SOCKET, UDP + 0x10, (i << 2) | 2, 0)
        before[key] = 100_000 - 1000 * i
        # pod-25 and pod-26 drop at the same rate: the one with more drops first
        after[key] = before[key] + 10 * min(i, 25)
    for n, count in enumerate(BENIGN_COUNTS):
        key = (200 + n, PURGE, PURGE_AT, 0, NETLINK)
        before[key], after[key] = 0, count
    groups.update_counts(before, now=0.0)
    groups.update_counts(after, now=2.0)
    order = [f"pod-{i:02d}" for i in (25, 26, *range(24, -1, -1))]
    return groups, order


def list_rows(text: str) -> list[str]:
    """The list's rows: from the column names to the first blank line (the group's why comes after)."""
    lines = text.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("pod "))
    end = next((i for i in range(head + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[head + 1:end]


def listed(text: str) -> list[str]:
    """The pods listed, in order (narrow terminals leave the namespace to the details)."""
    return re.findall(r"pod-\d\d", "\n".join(list_rows(text)))


def below(text: str) -> str:
    """What the rows below the list say (the selected group's why), in one line."""
    lines = text.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("pod "))
    start = next(i for i in range(head + 1, len(lines)) if not lines[i].strip())
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("Recent drops")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


@pytest.mark.parametrize("width,height,least", [(80, 24, 12), (120, 40, 27), (200, 60, 27), (60, 24, 12)])
def test_thirty_groups_fill_the_screen_ranked_one_line_each(width, height, least):
    groups, order = thirty()
    view = console.View(hooks=[Hook("tracepoint skb:kfree_skb", True), Hook("kprobe ip_forward", False, "no")],
                        filters=[f"netns cni-{n:040d} ({n})" for n in range(12)],
                        stats=Stats(matched=2_000_000, events=900, lost=12), elapsed=75, remaining=45,
                        interactive=True)
    text = render_text(groups, view, width, height)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height and max(len(line) for line in lines) <= width
    # The header: at most 3 lines above the column names, the counts first.
    table_at = next(i for i, line in enumerate(lines) if line.startswith("pod "))
    assert table_at <= 3
    assert "2,000,000 drops" in lines[0] and "12 events lost" in lines[0] and "45s left" in lines[0]
    # The hooks not attached: named where there is room, else counted (h names them); the filters follow.
    assert "filters: netns cni-" in lines[1] and ("(not: kprobe ip_forward)" in lines[1]) == (width >= 100)
    # The top-ranked groups, in rank order, as many as fit, at least `least`; never a pod twice.
    shown = listed(text)
    assert len(shown) >= least and shown == order[:len(shown)]
    if height >= 40:
        assert len(shown) == 27            # all of them, and the recent drops have no events to show
    else:
        assert f"{27 - len(shown)} more groups" in text
    # One line per group: its count and rate on the line that names it; a group no event
    # reached says so, after its reason and location where no column has them.
    for i in (25, 20, 0):
        row = next((line for line in list_rows(text) if f"pod-{i:02d}" in line), None)
        if row is not None:
            count = 100_000 - 1000 * i + 10 * min(i, 25)
            rate = f"{5 * i} " if i else r"(NO_SOCKET\S+ · )?\(no event"     # no drop in the window: no rate
            assert re.search(rf"{count:,} +{rate}", row) and "NO_SOCKET" in row
    # Benign drops: not listed, counted in one line.
    assert "QUEUE_PURGE" not in text
    assert f"{sum(BENIGN_COUNTS):,} benign drops hidden" in text
    if width >= 80:
        assert f"{sum(BENIGN_COUNTS):,} benign drops hidden (3 groups): b to show" in text


def test_benign_groups_listed_on_request():
    groups, _ = thirty()
    text = "\n".join(list_rows(render_text(groups, console.View(interactive=True), 200, 60, UiState(show_benign=True))))
    assert text.count("QUEUE_PURGE at skb_queue_purge_reason") == 3
    assert "hidden" not in text and "benign drops shown" in text
    # Without keys the way to see them is --all.
    plain = render_text(groups, console.View(), 200)
    assert "benign drops hidden (3 groups): --all to show" in plain


def test_sort_by_count_and_by_pod():
    groups, order = thirty()
    by_count = listed(render_text(groups, console.View(), 200, 60, UiState(sort="count")))
    assert by_count == [f"pod-{i:02d}" for i in range(27)]
    by_pod = listed(render_text(groups, console.View(), 200, 60, UiState(sort="pod")))
    assert by_pod == sorted(by_pod) and by_pod != listed(render_text(groups, console.View(), 200, 60))


def test_selection_scrolls_into_view_at_80x24():
    groups, order = thirty()
    last = (100, NO_SOCKET, UDP + 0x10, 2, False)
    text = render_text(groups, console.View(interactive=True), 80, 24, UiState(selected=last))
    # pod-00 ranks last (27th): the list scrolls so that it shows, at the bottom.
    shown = listed(text)
    assert shown[-1] == "pod-00" and shown == order[27 - len(shown):]


def test_console_shows_counts_rates_and_evidence():
    groups = golden_groups()
    view = console.View(
        hooks=[Hook("tracepoint skb:kfree_skb", True), Hook("kprobe", False, "unavailable")],
        filters=["netns node1 (4026532177)"], netns_names={4026532177: "node1", 4026532461: "pod-db"},
        stats=Stats(matched=310, events=6, lost=204, sampled_out=100), elapsed=12, remaining=18)
    text = render_text(groups, view)
    assert "PKT_TOO_BIG at ip_forward" in text
    mtu_row = next(line for line in list_rows(text) if "PKT_TOO_BIG" in line)
    assert "MTU 1450 flannel.1, 1500-byte DF · 1500-byte packet with DF set is larger than the MTU" in mtu_row
    # Counts come from the counters: the 6th group has 60 drops at 30/s, and ranks first.
    rows = [line for line in text.splitlines() if " at " in line and ("no-" in line or "mtu" in line)]
    assert "no-route" in rows[0] and " 60 " in rows[0] and " 30 " in rows[0]
    assert "204 events lost" in text and "310 drops" in text
    assert "100 sampled out" in text
    assert "18s left" in text
    assert "hooks 1/2 (not: kprobe)" in text
    assert "filters: netns node1 (4026532177)" in text
    assert "Recent drops" in text and "NETFILTER_DROP" in text and "pod-db" in text
    # IPv6 endpoints are shown, not eaten as markup.
    assert re.search(r"\[fd00:200::2\]:\d+ -> \[fd00:10:244:1::b\]:9999 udp", text.split("Recent drops")[1])


def test_verbose_and_help_show_hooks_and_filters_in_full():
    groups = golden_groups()
    filters = [f"netns cni-{n:040d} ({n})" for n in range(5)]
    view = console.View(hooks=[Hook("kprobe ip_forward", False, "kernel built without CONFIG_KPROBES")],
                        filters=filters, pods="3 pods on node sim-node1", note="demo: mtu: big packets")
    short = render_text(groups, view, 200, 60)
    assert filters[4] not in short and "+4" in short
    view.verbose = True
    verbose = " ".join(render_text(groups, view, 200, 60).split())
    assert all(f in verbose for f in filters) and "CONFIG_KPROBES" in verbose and "demo: mtu" in verbose
    view.verbose = False
    helped = " ".join(render_text(groups, view, 200, 60, UiState(help=True)).split())
    assert all(f in helped for f in filters) and "pause the display" in helped and "3 pods on node" in helped


def test_details_show_the_whole_story():
    groups = golden_groups()
    mtu = next(g for g in groups.groups.values() if g.category == "mtu")
    web, db = PodRef("default", "web", "u1", "n"), PodRef("default", "db", "u2", "n")
    mtu.attribution = Attribution(web, "from-pod", db, "to-pod")
    groups.add_event(mtu.latest, Verdict("mtu", mtu.hint, {"by": "route", "mtu": 1450}), mtu.attribution)
    view = console.View(netns_names={mtu.netns: "node1"}, interactive=True)
    listing = render_text(groups, view, 120, 40)
    assert "default/web -> default/db" in listing
    text = render_text(groups, view, 80, 24, UiState(selected=mtu.key, details=True))
    flat = " ".join(text.split())
    assert "default/web -> default/db" in flat
    assert "pod: default/web (from-pod)" in flat and "other end: default/db (to-pod)" in flat
    assert mtu.hint in flat                         # the whole hint, wrapped, not cut
    assert "by: route" in flat and "mtu: 1450" in flat
    assert "1500-byte packet, DF on cni0" in flat and "route out flannel.1 mtu 1450" in flat
    assert "latest flows" in flat and "10.244.2.10:5000 udp" in flat and "×2" in flat
    assert "first seen" in flat and "last seen" in flat and "netns: node1" in flat
    assert len(text.rstrip("\n").split("\n")) <= 24


def test_group_without_events_says_so():
    reasons = facts.reasons_from_format((GOLDEN / "kfree_skb.format").read_text())
    groups = Groups(decode.Decoder(reasons, facts.Kallsyms.load(GOLDEN / "kallsyms")))
    groups.update_counts({(7, 3, 0xffffffff82046290 + 0x10, 0, 0): 5}, now=1.0)
    text = render_text(groups, console.View())
    assert "no event delivered for this group yet" in text
    assert "no-socket" in text and "__udp4_lib_rcv" in text
    assert "filters: none" in text


def test_empty_console():
    groups = Groups(decode.Decoder({}, facts.Kallsyms([], [])))
    assert "no drops yet" in render_text(groups, console.View(), 80, 24)


def test_long_names_never_make_a_row_taller_than_one_line():
    groups = golden_groups()
    for g in groups.groups.values():
        g.attribution = Attribution(PodRef("kube-system", "x" * 120, "u", "n"), "in-pod")
    text = render_text(groups, console.View(), 80, 24)
    rows = list_rows(text)
    assert len(rows) == len(groups.groups) and all("xxxxxxxx" in row for row in rows)
    assert max(len(line) for line in text.splitlines()) <= 80
    wide = list_rows(render_text(groups, console.View(), 120, 40))
    assert len(wide) == len(groups.groups) and all("kube-system/xx" in row for row in wide)


# ---------------------------------------------------------------- the live console's state

def test_pause_keeps_the_rows_while_counting_goes_on_and_q_quits():
    groups, _ = thirty()
    quit_called = []
    env = Environment(stdin=io.StringIO(), stdout=io.StringIO(), stdin_tty=True, stdout_tty=True, width=80)
    live = tui.LiveConsole(env, console.View(), groups, on_quit=lambda: quit_called.append(1))
    assert live.interactive and live.view.interactive
    key = (100, NO_SOCKET, UDP + 0x10, 2, 0)
    live.keys(["p"])
    groups.update_counts({key: 1_000_000}, now=4.0)
    live.tick(groups)
    assert next(g for g in live.frame.groups if g.key == key).count == 100_000       # the screen held
    assert groups.groups[key].count == 1_000_000                                    # counting went on
    live.keys(["p"])
    live.tick(groups)
    assert next(g for g in live.frame.groups if g.key == key).count == 1_000_000
    live.keys(["enter"])
    assert live.state.details and live.state.selected == key     # 1,000,000 in 2 s: now it ranks first
    live.keys(["q"])
    assert quit_called == [1]


def test_not_interactive_without_a_terminal_on_stdin():
    groups, _ = thirty()
    env = Environment(stdin=io.StringIO(), stdout=io.StringIO(), stdout_tty=True, width=80)
    assert not tui.LiveConsole(env, console.View(), groups).interactive


def test_summary_lines_mark_benign_groups():
    groups, _ = thirty()
    lines = console.summary_lines(groups, {}, limit=40)
    assert sum("(benign) QUEUE_PURGE" in line for line in lines) == 3
    assert lines[0].startswith("100,000 no-socket")       # by count


def test_times_in_details_are_the_groups_first_and_last():
    groups = golden_groups()
    g = next(iter(groups.groups.values()))
    g.first_seen = datetime(2026, 1, 1, 6, 0, 1, tzinfo=UTC)
    g.last_seen = g.first_seen + timedelta(minutes=2)
    text = render_text(groups, console.View(), 200, 60, UiState(selected=g.key, details=True))
    assert "first seen 06:00:01 UTC" in text and "last seen 06:02:01 UTC" in text


def test_paused_says_so_in_the_header():
    groups, _ = thirty()
    lines = render_text(groups, console.View(interactive=True, notices=["clash"]), 80, 24,
                        UiState(paused=True)).split("\n")
    assert lines[2].startswith("paused, counting goes on: p to resume")
    assert lines[3].startswith("pod ")


# ---------------------------------------------------------------- 80 columns: what decides, and the why below

WEB = PodRef("default", "web-7d9f8c6b5-x2k4q", "u1", "n", workload="web")
WEB2 = PodRef("default", "web-7d9f8c6b5-b7m1z", "u3", "n", workload="web")
DB = PodRef("default", "db-0", "u2", "n", workload="db")
FORWARD_POLICY = {"by": "policy", "backend": "iptables-nft", "family": "ip", "table": "filter", "chain": "FORWARD",
                  "target": "DROP", "rule": None, "packets": 5}


def scene() -> tuple[Groups, dict[str, object]]:
    """The golden groups with pods: web -> db's MTU drops, another web pod's FORWARD policy drops."""
    groups = golden_groups()
    mtu = next(g for g in groups.groups.values() if g.category == "mtu")
    groups.add_event(mtu.latest, classify.classify(mtu.latest), Attribution(WEB, "from-pod", DB, "to-pod"))
    nf = next(g for g in groups.groups.values() if g.category == "netfilter")
    groups.add_event(nf.latest, Verdict("netfilter", "dropped by the FORWARD chain's policy DROP in table filter "
                                                     "(iptables-nft) (5 packets in the last second) on cni0: allow "
                                                     "the traffic with a rule before it or set the policy to ACCEPT",
                                        FORWARD_POLICY), Attribution(WEB2, "from-pod"))
    return groups, {"mtu": mtu.key, "netfilter": nf.key}


def row_of(text: str, needle: str) -> str:
    return next(line for line in list_rows(text) if needle in line)


def test_at_80x24_each_row_leads_with_what_decides_and_the_first_groups_why_fills_the_rows_below():
    groups, keys = scene()
    view = console.View(netns_names={4026532177: "node1"}, interactive=True)
    text = render_text(groups, view, 80, 24)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    # The MTU and its device, the chain and its policy, the port nobody listens on: in the rows.
    assert "MTU 1450 flannel.1, 1500-byte DF" in row_of(text, " mtu ")
    assert "FORWARD policy DROP" in row_of(text, "netfilter")
    assert "udp/9999 nothing listening on 10" in row_of(text, "udp/9999 nothing listening on 10")
    # Two pods of one Deployment keep what tells them apart; db-0 fits whole.
    mtu_row, nf_row = row_of(text, " mtu "), row_of(text, "netfilter")
    assert re.match(r"\S*x2k4q -> db-0 ", mtu_row) and re.match(r"\S*b7m1z from-pod ", nf_row)
    # No key pressed: the first group's whole why, below the list.
    first = list_rows(text)[0]
    assert "no-route" in first
    assert "why: no route to 10.244.3.10 on cni0 (IP_INNOROUTES): add the route for its network, e.g. the missing " \
           "pod CIDR route to another node, or a default route" in below(text)


def test_the_selected_groups_why_and_evidence_fill_the_rows_below():
    groups, keys = scene()
    view = console.View(netns_names={4026532177: "node1"}, interactive=True)
    mtu = groups.groups[keys["mtu"]]
    text = below(render_text(groups, view, 80, 24, UiState(selected=keys["mtu"])))
    assert text.startswith("default/web-7d9f8c6b5-x2k4q -> default/db-0 mtu PKT_TOO_BIG at ip_forward")
    assert "why: " + mtu.hint in text                                     # whole, wrapped
    assert "path: 1500-byte packet, DF on cni0 (mtu 1500) -> route out flannel.1 mtu 1450" in text
    nf = below(render_text(groups, view, 80, 24, UiState(selected=keys["netfilter"])))
    assert "FORWARD chain's policy DROP" in nf and "evidence: by: policy · backend: iptables-nft" in nf
    assert "chain: FORWARD · target: DROP · packets: 5" in nf


@pytest.mark.parametrize("width,height", [(60, 24), (120, 30), (200, 40)])
def test_other_widths_read_too(width, height):
    groups, keys = scene()
    text = render_text(groups, console.View(interactive=True), width, height, UiState(selected=keys["mtu"]))
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height and max(len(line) for line in lines) <= width
    assert len(list_rows(text)) == len(groups.groups)
    assert "MTU 1450 flannel.1, 1500-byt" in row_of(text, "MTU")      # 60 columns: 29 for the why
    assert "FORWARD policy DROP" in row_of(text, "FORWARD")
    assert "larger than the MTU 1450 of flannel.1" in below(text) and "route out flannel.1 mtu 1450" in below(text)
    if width >= 100:     # the reason, location and namespace come back
        assert "PKT_TOO_BIG" in row_of(text, "MTU") and "default/" in row_of(text, "MTU")
    else:
        assert "PKT_TOO_BIG" not in row_of(text, "MTU")


def test_a_why_longer_than_the_rows_below_is_cut_with_a_pointer_to_all_of_it():
    groups, order = thirty()
    first = next(g for g in groups.groups.values() if g.attribution and g.attribution.pod.name == order[0])
    first.hint = "a very long why " * 40
    text = render_text(groups, console.View(interactive=True), 80, 24)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 24 and lines[-1].strip() == "… ⏎ for all of it"
    assert "why: a very long why" in below(text)
    assert len(listed(text)) >= 12                                          # the list keeps its rows
