"""The lab's DNS responder on plain bytes: it answers a resolver's queries and
survives any datagram (Hypothesis), answering only what parses as a query."""

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from tracer.lab.traffic import DNS_A, DNS_AAAA, DNS_QR, dns_answer, dns_query, parse_dns_query


def test_a_query_gets_one_address_and_aaaa_none():
    q = dns_query(0x1234, DNS_A)
    reply = dns_answer(q, "10.244.1.11")
    assert reply is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert (qid, bool(flags & DNS_QR), qd, an, ns, ar) == (0x1234, True, 1, 1, 0, 0)
    assert reply[12:len(q)] == q[12:]                      # the question, echoed
    assert socket.inet_ntoa(reply[-4:]) == "10.244.1.11"
    aaaa = dns_answer(dns_query(7, DNS_AAAA), "10.244.1.11")
    assert aaaa is not None and struct.unpack("!H", aaaa[6:8])[0] == 0 and aaaa[12:] == dns_query(7, DNS_AAAA)[12:]


def test_what_is_no_query_gets_no_answer():
    q = dns_query(1, DNS_A)
    assert dns_answer(dns_answer(q, "10.0.0.1") or b"", "10.0.0.1") is None    # an answer is no query
    assert dns_answer(q[:-1], "10.0.0.1") is None                              # cut short
    assert dns_answer(q[:12] + b"\xc0\x0c" + q[-4:], "10.0.0.1") is None        # a pointer in a query
    assert dns_answer(b"\0" * 600, "10.0.0.1") is None                         # larger than UDP DNS


@given(st.binary(max_size=600))
def test_any_datagram_is_answered_or_ignored(data):
    parsed = parse_dns_query(data)
    reply = dns_answer(data, "10.244.1.11")
    assert (parsed is None) == (reply is None)
    if reply is not None and parsed is not None:
        assert reply[:2] == data[:2] and len(reply) <= 12 + len(parsed[2]) + 16


@given(st.integers(0, 0xFFFF), st.sampled_from([DNS_A, DNS_AAAA]),
       st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63), min_size=1, max_size=4))
def test_queries_parse_back(qid, qtype, labels):
    q = dns_query(qid, qtype, ".".join(labels))
    assert parse_dns_query(q) == (qid, qtype, q[12:])
