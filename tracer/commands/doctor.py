"""netdrop doctor: check the node for misconfigurations that drop packets (exit status 1 if any)."""

from __future__ import annotations

from pathlib import Path

from ..env import Environment
from ..errors import ExitStatus
from ..messages import info, warn
from ..options import DoctorOptions
from ..pipeline.startup import node_netns, require_root


def run(opts: DoctorOptions, env: Environment) -> ExitStatus:
    from ..doctor.run import Scope, diagnose
    from ..doctor.view import to_json, write

    require_root(env)
    scope = Scope(node_netns(opts.netns, env), opts.netns or "this node", pod=opts.pod, namespace=opts.namespace,
                  kubeconfig=opts.kubeconfig, node_name=opts.node, cni_dir=Path(opts.cni_dir), tracefs=env.tracefs)
    report = diagnose(scope, warn=lambda msg: warn(env, msg))
    bad = report.problems
    if opts.json:
        env.stdout.write(to_json(report.findings, report.node))
    else:
        write(env, report.findings, report.node)
        info(env, f"{len(bad)} problem{'s' if len(bad) != 1 else ''} found" if bad else "no problems found")
    return ExitStatus.PROBLEMS if bad else ExitStatus.OK
