"""Pod names shortened for a column: the workload's name or the middle cut, never two pods alike."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.sinks.podnames import MIN_WIDTH, Name, short_names


def test_a_name_that_fits_stays_whole_a_lone_workloads_pod_reads_as_its_workload():
    pods = {"web": Name("web-7d9f8c6b5-x2k4q", "web"), "db": Name("db-0", "db"),
            "exp": Name("node-exporter-4kq9z", "node-exporter")}
    got = short_names(pods, [8, 20])
    assert got[("web", 8)] == "web" and got[("web", 20)] == "web-7d9f8c6b5-x2k4q"
    assert got[("db", 8)] == "db-0"
    assert got[("exp", 8)] == "node-ex…" and got[("exp", 20)] == "node-exporter-4kq9z"


def test_pods_of_one_workload_keep_what_tells_them_apart():
    pods = {i: Name(f"web-7d9f8c6b5-{s}", "web") for i, s in enumerate(("x2k4q", "b7m1z", "q9w8e"))}
    got = short_names(pods, [10])
    assert [got[(i, 10)] for i in range(3)] == ["web…-x2k4q", "web…-b7m1z", "web…-q9w8e"]


def test_the_namespace_is_kept_when_the_name_is_cut():
    pods = {1: Name("web-7d9f8c6b5-x2k4q", "web", "default/"), 2: Name("web-7d9f8c6b5-b7m1z", "web", "default/"),
            3: Name("api-5c6d7b9f4-m8n2p", "api", "shop/")}
    got = short_names(pods, [18])
    assert got[(1, 18)].startswith("default/") and got[(1, 18)].endswith("x2k4q")
    assert got[(3, 18)] == "shop/api"


def test_names_alike_at_both_ends_get_numbered_cuts():
    a = "a" * 10 + "x" + "b" * 10
    b = "a" * 10 + "y" + "b" * 10
    got = short_names({1: Name(a), 2: Name(b)}, [9])
    assert got[(1, 9)] != got[(2, 9)] and all(len(t) <= 9 for t in got.values())
    assert got[(2, 9)].endswith("#2")


def test_a_bare_pod_named_as_another_pods_workload_is_not_confused_with_it():
    pods = {1: Name("web", "web"), 2: Name("web-7d9f8c6b5-x2k4q", "web")}
    got = short_names(pods, [8])
    assert got[(1, 8)] == "web" and got[(2, 8)] != "web"


names = st.text(alphabet="ab-0…#/", min_size=1, max_size=30)


@settings(max_examples=500)
@given(st.dictionaries(names, st.tuples(st.none() | st.text(alphabet="ab-", max_size=12),
                                        st.sampled_from(["", "default/", "a/"])), max_size=12),
       st.lists(st.integers(0, 40), min_size=1, max_size=3))
def test_never_two_pods_alike_never_wider_than_asked(pods, widths):
    named = {full: Name(full, workload, prefix) for full, (workload, prefix) in pods.items()}
    got = short_names(named, widths)
    assert set(got) == {(k, w) for k in named for w in widths}
    for (key, width), text in got.items():
        assert len(text) <= max(width, MIN_WIDTH)
        if len(named[key].full) <= width:
            assert text == named[key].full or text.endswith(tuple(f"#{n}" for n in range(2, 20)))
    owners: dict[str, str] = {}
    for (key, _width), text in got.items():
        assert owners.setdefault(text, named[key].full) == named[key].full, (text, key)
