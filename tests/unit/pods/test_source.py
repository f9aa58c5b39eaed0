"""PodSource's start on plain files and the lab's API server (no root, nothing entered)."""

import pytest

from tracer.errors import UserError
from tracer.lab import api as labapi
from tracer.pods.kube import Selection
from tracer.pods.source import PodSource


@pytest.fixture
def kubeconfig(tmp_path):
    server = labapi.KubeAPI()
    server.start()
    server.add_node(labapi.node_object("node-a", ["192.168.1.5"]))
    yield str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    server.stop()


@pytest.mark.parametrize("selection", [Selection(), Selection(all_namespaces=True)])
def test_a_node_namespace_that_cannot_be_entered_is_one_user_error(tmp_path, kubeconfig, selection):
    # --node-netns naming something that is not (or no longer) a network namespace: the
    # netlink socket cannot be made in it. One line for the user, not an OSError's traceback.
    not_a_netns = tmp_path / "node1"
    not_a_netns.write_text("")
    with pytest.raises(UserError) as err:
        PodSource(selection, kubeconfig, "node-a", str(not_a_netns))
    text = str(err.value)
    assert text.startswith(f"cannot read the node's network namespace {str(not_a_netns)!r}: ")
    assert "\n" not in text
