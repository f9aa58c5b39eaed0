"""pods: which pod a drop belongs to, from the Kubernetes API joined with what the node itself knows.

The API names pods and their addresses, the node (tracer.node) names namespaces and veths; joined by pod IP they
become the index that tags each drop and the pod maps the kernel filters on. Modules:

- kube: the pods and nodes of this node from the Kubernetes API, through the official client.
- apicall: every API call within one deadline and one byte cap, cut off at once when netdrop stops.
- objects, apitext: API objects become netdrop's types (PodInfo, ServiceInfo), every text value in
  them made safe once, there.
- source: keeps the pod index current in the background, and says what the kernel's pod maps must hold.
- attribute: the pod index (API pods joined with the node's namespaces); a drop's pod tag -> pod and direction;
  pod ids (stable while a tag may be in flight, forgotten a while after the pod went).
- workload: a pod's workload (its Deployment, StatefulSet, ...) from its owners.
"""
