"""watch.Pipeline: a record that repeats the one before it but for its
timestamp (a storm of one flow) takes a shortcut past decode, classify and
attribution; what the sinks and the groups get must be what decoding every
record on its own gives."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.explain.classify import classify
from tracer.groups import Groups
from tracer.kernel import decode, event
from tracer.pods.attribute import PodIds, PodIndex
from tracer.node.table import HostVeth, NetnsInfo, NodeSnapshot
from tracer.watch import Pipeline

from .helpers import KALLSYMS, NETNS, REASONS, RECORDS, Collect, record


def pod_index() -> PodIndex:
    snapshot = NodeSnapshot(1, ("192.168.1.5",), {
        NETNS: NetnsInfo(NETNS, ("cni-1",), (), ("10.244.1.11",), HostVeth(7, "veth1"))})
    return PodIndex(snapshot, None, "node-1", PodIds())


# Runs of records: the same record again with a later timestamp, or another one.
runs = st.lists(st.tuples(st.integers(0, len(RECORDS) - 1), st.sampled_from([None, 1024, 1025]),
                          st.sampled_from([0, 1 << 2 | event.ND_DIR_IN_POD]), st.integers(1, 6)),
                min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(runs, st.integers(1, 7))
def test_repeated_records_get_what_decoding_each_alone_gives(spec, batch):
    records, ts = [], 10**9
    for base, sport, pod, repeat in spec:
        for _ in range(repeat):
            ts += 1_000_003
            records.append(record(base, ts, sport, pod))
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    index = pod_index()
    sink = Collect()
    pipeline = Pipeline(dec, Groups(dec), [sink], lambda: index)
    for i in range(0, len(records), batch):
        pipeline.deliver(records[i:i + batch])

    alone = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    expected = []
    for rec in records:
        drop = alone.decode_record(rec)
        expected.append((drop, classify(drop), index.attribute(drop)))
    assert sink.got == expected
    assert pipeline.groups.events == len(records)
    assert [d.time for d, _, _ in sink.got] == sorted({d.time for d, _, _ in sink.got})


def test_a_repeated_record_is_a_new_drop_with_its_own_time():
    dec = decode.Decoder(REASONS, KALLSYMS, mono_to_wall=0.0)
    first = dec.decode_record(record(0, 10**9, None, 0))
    again = dec.decode_again(record(0, 2 * 10**9, None, 0))
    assert again is not first and again.time != first.time
    assert {f: getattr(again, f) for f in decode.Drop.__slots__ if f != "time"} == \
        {f: getattr(first, f) for f in decode.Drop.__slots__ if f != "time"}
    assert (again.time - first.time).total_seconds() == 1.0

