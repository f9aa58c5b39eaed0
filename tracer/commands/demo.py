"""netdrop demo: a simulated Kubernetes node in namespaces, its drop cases played and watched live."""

from __future__ import annotations

import functools
import threading

from ..env import Environment
from ..errors import ExitStatus
from ..kernel.loader import TracerSettings
from ..messages import warn
from ..options import DemoOptions
from ..pipeline.session import Session
from ..pipeline.startup import STACKS_BY_DEFAULT, kernel_facts, require_root
from ..signals import SIGNALS


def run(opts: DemoOptions, env: Environment) -> ExitStatus:
    from ..kernel.filters import Filters
    from ..lab.cases import Player, select_cases
    from ..lab.node import SimNode
    from ..lab.ownership import check_prefix
    from ..pods.kube import Selection
    from ..pods.source import PodSource

    check_prefix(opts.prefix)       # a bad prefix fails at once, root or not
    require_root(env)
    facts = kernel_facts(opts.kernel, env)
    cases = select_cases(opts.cases)
    # The build starts the process holding the cache pod's namespace: it must
    # end with `node` known, or nothing would remove it. A signal during the
    # build is acted on right after it, inside the try: the lab is destroyed.
    with SIGNALS.deferred():
        node = SimNode.create(prefix=opts.prefix)
    player = Player(node, cases)
    try:
        SIGNALS.check()
        filters = Filters(netns=frozenset(node.netns_inodes().values()))
        note = "demo: " + "; ".join(f"{c.name}: {c.description}" for c in cases)
        pods = PodSource(Selection(), str(node.kubeconfig), None, node.node1, warn=functools.partial(warn, env))
        settings = TracerSettings(tp_btf=not opts.kernel.classic_tracepoints, stacks=STACKS_BY_DEFAULT)
        with Session(env, facts, filters, pods, settings, opts.view, title="netdrop demo: simulated node",
                     note=note) as session:
            stats = session.run_live(opts.duration, threading.Thread(target=player.run, daemon=True))
            session.report(stats)
        return ExitStatus.OK
    finally:
        with SIGNALS.deferred():    # a signal now must not cut the removal short
            player.stop()
            node.destroy()
