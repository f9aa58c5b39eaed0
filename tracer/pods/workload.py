"""workload: the controller a pod belongs to, for the `workload` label of netdrop serve.

From what the pod itself says (kube.PodInfo: its controller ownerReference and
its labels), so the agent needs no API rights beyond reading pods: no
ReplicaSet or Job is ever fetched. Per-workload series stay few while pods
come and go (a Deployment's pods share one name; OpenShift's network
observability stops its labels at the workload for the same reason).

- a Deployment's pod is owned by a ReplicaSet named `<deployment>-<hash>`,
  and carries that hash as its `pod-template-hash` label
  (pkg/controller/deployment/sync.go, getNewReplicaSet()): the ReplicaSet's
  name less `-<hash>` is the Deployment;
- a CronJob's pod is owned by a Job named `<cronjob>-<scheduled time in
  minutes since the epoch>` (pkg/controller/cronjob/utils.go,
  getJobName()): the Job's name less that number is the CronJob;
- a StatefulSet, DaemonSet, Job or any other controller: its own name;
- no controller (a bare pod), or a static pod (owned by its Node): the pod's name.

The owner's name is whatever the pod's creator wrote; it comes here already made
safe (objects.pod_info, pods/apitext.py): a name Kubernetes would not accept is
an escaped prefix and a hash, which never ends in `-<pod-template-hash>` or
`-<minutes>`, so it stays the workload's name as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .objects import PodInfo

TEMPLATE_HASH_LABEL = "pod-template-hash"
# The scheduled time CronJob puts in its Jobs' names, in minutes: 8 digits
# since 1976, 9 from the year 2160.
_CRONJOB_SUFFIX = re.compile(r"^(.+)-\d{8,9}$")


@dataclass(frozen=True)
class Workload:
    kind: str     # Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ..., or Pod (none)
    name: str


def workload_of(pod: PodInfo) -> Workload:
    """The workload owning pod, from its controller reference and labels alone."""
    if pod.owner is None:
        return Workload("Pod", pod.name)
    kind, name = pod.owner
    if kind == "ReplicaSet":
        tmpl = dict(pod.labels).get(TEMPLATE_HASH_LABEL)
        if tmpl and name.endswith(f"-{tmpl}") and len(name) > len(tmpl) + 1:
            return Workload("Deployment", name[:-len(tmpl) - 1])
        return Workload("ReplicaSet", name)
    if kind == "Job":
        m = _CRONJOB_SUFFIX.match(name)
        return Workload("CronJob", m.group(1)) if m else Workload("Job", name)
    if kind == "Node":
        # A static pod's mirror (the kubelet owns it through its Node): each is one of a kind.
        return Workload("Pod", pod.name)
    return Workload(kind, name)
