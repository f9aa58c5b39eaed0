"""The Explainer finds the paths of the namespaces it wants without walking /proc every round."""

import os

from tracer.explain import explainer as ex
from tracer.explain.explainer import WantedPaths

OWN = os.stat("/proc/self/ns/net").st_ino


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_walks_only_while_a_wanted_namespace_has_no_path_and_at_most_every_few_seconds():
    wanted: set[int] = {OWN}
    walks = []

    def walk():
        walks.append(1)
        return {OWN: None, 77: "/run/netns/gone-already"}
    clock = Clock()
    paths = WantedPaths(lambda: wanted, walk, clock)
    assert paths() == {OWN: None} and len(walks) == 1      # the node's own: found by the first walk
    for _ in range(5):
        clock.t += 1
        assert paths() == {OWN: None}
    assert len(walks) == 1                                 # found once, checked by a stat since
    wanted.add(12345)                                      # wanted, found nowhere
    paths()
    clock.t += 1
    paths()
    assert len(walks) == 2                                 # looked for at once, then not before WALK_SECONDS
    wanted.add(777)                                        # another one: at once, whatever the last walk
    paths()
    assert len(walks) == 3
    clock.t += ex.WALK_SECONDS
    paths()
    assert len(walks) == 4


def test_a_path_that_no_longer_opens_that_namespace_is_dropped():
    paths = WantedPaths(lambda: {OWN, 55}, lambda: {OWN: None, 55: "/nonexistent/ns"}, Clock())
    # found by the walk, but the path does not stat to inode 55 (gone, or its inode reused)
    assert 55 not in paths()


def test_the_explainer_without_paths_uses_it():
    e = ex.Explainer(node_netns=OWN, sample=lambda path, rules: (None, None))
    e.sample_now()
    assert e.paths == {OWN: None}
    assert isinstance(e._discover, WantedPaths)
