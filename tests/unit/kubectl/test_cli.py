"""kubectl netdrop's command line: options parsed once, every user error one line and status 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tracer.errors import UserError
from tracer.kubectl import cli
from tracer.kubectl.options import CaptureOptions, ListOptions, WatchOptions

from .conftest import Plugin, write_kubeconfig


def test_capture_options_parsed_once():
    opts = cli.parse(["-n", "shop", "capture", "-l", "app=web", "--duration", "2m", "--since", "10m",
                      "--port", "53", "--port", "53", "--ip", "10.96.0.10", "--category", "conntrack",
                      "--packets", "--output", "out", "--name", "web-drops", "--format", "markdown",
                      "--context", "prod"])
    assert isinstance(opts, CaptureOptions)
    assert opts.namespace == "shop" and opts.target.context == "prod" and opts.selector == "app=web"
    assert (opts.duration, opts.since) == (120.0, 600.0)
    assert opts.filters.ports == (53,) and opts.filters.ips == ("10.96.0.10",)
    assert opts.filters.categories == ("conntrack",) and opts.packets and opts.output == Path("out")
    assert (opts.name, opts.format, opts.node_scope) == ("web-drops", "markdown", False)


def test_kubectl_flags_before_or_after_the_command():
    a = cli.parse(["--kubeconfig", "/k", "-n", "x", "list", "-A"])
    b = cli.parse(["list", "-A", "--kubeconfig", "/k", "-n", "x"])
    assert isinstance(a, ListOptions) and a == b and a.all_namespaces and a.target.kubeconfig == "/k"
    w = cli.parse(["watch", "--pod", "web-0", "--dry-run"])
    assert isinstance(w, WatchOptions) and w.namespace is None and w.dry_run


@pytest.mark.parametrize(("argv", "said"), [
    (["capture", "--pod", "web-0", "--duration", "2 minutes", "-o", "d"], "not a duration such as 30s"),
    (["capture", "--pod", "web-0", "--duration", "1.5m", "-o", "d"], "not a duration"),
    (["capture", "--pod", "web-0", "--duration", "2m", "-o", "d", "--port", "0"], "a port is 1-65535"),
    (["capture", "--pod", "web-0", "--duration", "2m", "-o", "d", "--ip", "10.0.0"], "not an IP address"),
    (["capture", "--pod", "web-0", "--duration", "2m", "-o", "d", "--category", "nope"], "invalid choice"),
    (["capture", "-l", "=web", "--duration", "2m", "-o", "d"], "not a label selector"),
    (["capture", "--pod", "Web_0", "--duration", "2m", "-o", "d"], "not a Kubernetes name"),
    (["capture", "--duration", "2m", "-o", "d"], "one of the arguments --pod -l/--selector --node --all-nodes"),
    (["capture", "--pod", "a", "--node", "b", "--duration", "2m", "-o", "d"], "not allowed with"),
    (["capture", "--pod", "a", "-o", "d"], "--duration"),
    (["get"], "name"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line(tmp_path, argv, said):
    run = Plugin(None, tmp_path)(*argv)
    assert run.status == 2 and run.out == ""
    line, = run.err.strip().splitlines()
    assert line.startswith("kubectl netdrop: error: ") and said in line


def test_bounds_are_the_agents_and_checked_before_the_api_is_asked(tmp_path):
    """No kubeconfig at all: a duration out of bounds is still refused first, as the agents would."""
    plugin = Plugin(None, tmp_path)
    for argv, said in ((["--duration", "2h"], "duration: 1s to 1h"), (["--duration", "1m", "--since", "2h"],
                                                                         "since: at most 1h")):
        run = plugin("capture", "--pod", "web-0", "-o", str(tmp_path / "out"), *argv)
        assert run.status == 2 and said in run.err and len(run.err.splitlines()) == 1
    run = plugin("capture", "--node", "node-1", "-n", "shop", "--duration", "1m", "-o", str(tmp_path / "o"))
    assert run.status == 2 and "agents' namespace netdrop, not shop" in run.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_no_kubeconfig_is_one_line(tmp_path):
    run = Plugin(None, tmp_path)("list")
    assert run.status == 2
    assert run.err == "kubectl netdrop: error: no kubeconfig: pass --kubeconfig, set $KUBECONFIG, or write " \
                      "~/.kube/config\n"
    run = Plugin(None, tmp_path)("list", "--kubeconfig", str(tmp_path / "missing"))
    assert run.status == 2 and f"kubeconfig {tmp_path / 'missing'} does not exist" in run.err


def test_unreachable_api_is_one_line(tmp_path):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kc = write_kubeconfig(tmp_path / "kc", {"c": (f"http://127.0.0.1:{port}", "t", None)}, "c")
    run = Plugin(kc, tmp_path)("get", "web-drops")
    assert run.status == 2
    line, = run.err.splitlines()
    assert line.startswith(f"kubectl netdrop: error: cannot reach the API server at http://127.0.0.1:{port}: ")


def test_context_and_its_namespace(lab, tmp_path):
    """The context's namespace is -n's default; --context picks another; an unknown context is named."""
    kc = write_kubeconfig(tmp_path / "kc", {"shop-ctx": (lab.url, lab.token, "shop"),
                                            "other": (lab.url, lab.token, None)}, "other")
    plugin = Plugin(kc, tmp_path)
    run = plugin("watch", "--pod", "web-0", "--dry-run", "--context", "shop-ctx")
    assert run.status == 0 and run.out.endswith("netdrop watch --pod web-0 -n shop\n")
    run = plugin("watch", "--pod", "web-0", "--dry-run")        # "other": no namespace, so default
    assert run.status == 2 and run.err.strip() == "kubectl netdrop: error: no pod web-0 in namespace default"
    run = plugin("list", "--context", "prod")
    assert run.status == 2 and "context 'prod' is not in kubeconfig" in run.err and "other, shop-ctx" in run.err


def test_kubeconfig_files_merged_first_wins(lab, tmp_path):
    first = write_kubeconfig(tmp_path / "a", {"a": (lab.url, lab.token, "shop")}, None)
    second = write_kubeconfig(tmp_path / "b", {"a": ("http://127.0.0.1:1", "x", "nowhere"),
                                               "b": (lab.url, "x", None)}, "a")
    plugin = Plugin(None, tmp_path)
    plugin.kubeconfig = Path(f"{first}:{second}")
    run = plugin("watch", "--pod", "web-0", "--dry-run")
    assert run.status == 0 and "-n shop" in run.out


def test_watch_builds_the_exec_into_the_agent_on_the_pods_node(plugin, tmp_path):
    calls = []
    run = plugin("watch", "--pod", "web-1", "--context", "lab",
                 execvp=lambda prog, argv: calls.append((prog, argv)))
    assert run.status == 0 and run.err == ""
    assert calls == [("kubectl", ["kubectl", "--context", "lab", "exec", "-it", "-n", "netdrop", "netdrop-bx1",
                                  "-c", "netdrop", "--", "netdrop", "watch", "--pod", "web-1", "-n", "shop"])]
    run = plugin("watch", "--pod", "web-0", "--dry-run")
    assert run.out == "kubectl exec -it -n netdrop netdrop-ax0 -c netdrop -- netdrop watch --pod web-0 -n shop\n"


def test_watch_without_kubectl_or_agent_says_what_to_do(plugin, lab):
    def missing(prog, argv):
        raise FileNotFoundError(prog)
    run = plugin("watch", "--pod", "db-0", execvp=missing)
    assert run.status == 2 and run.err.startswith("kubectl netdrop: error: kubectl is not on PATH; run: kubectl ")
    lab.delete_pod("netdrop", "netdrop-cx2")
    run = plugin("watch", "--pod", "db-0", "--dry-run")
    assert run.status == 2 and "no netdrop agent pod on node node-3" in run.err
    assert "--field-selector spec.nodeName=node-3" in run.err


def test_existing_output_refused_before_anything(plugin, tmp_path, lab):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    before = len(lab.requests)
    run = plugin("capture", "--pod", "web-0", "--duration", "1m", "-o", str(out))
    assert run.status == 2 and "exists and is not an empty directory" in run.err
    assert len(lab.requests) == before


def test_user_error_class_is_the_cli_errors():
    with pytest.raises(UserError):
        cli.parse(["list", "--bogus"])
