"""pods: which pod a drop belongs to, from the Kubernetes API joined with what the node itself knows.

The API names pods and their addresses, the node names namespaces and veths; joined by pod IP they
become the index that tags each drop and the pod maps the kernel filters on. Modules:

- kube: the pods and nodes of this node from the Kubernetes API, through the official client.
- apicall: every API call within one deadline and one byte cap, cut off at once when netdrop stops.
- objects, apitext: API objects become netdrop's types (PodInfo, ServiceInfo), every text value in
  them made safe once, there.
- nodeview: the node's namespaces, addresses and host veths as netdrop's types, found under
  /run/netns and /proc, and kept one change at a time (NodeTable).
- nodescan: reads them (NodeScanner): everything at start and as a safety net, else what changed.
- nodeevents: the node namespace's link, address and namespace-id notifications and /run/netns
  (inotify), folded into what to look at again.
- rtnl: rtnetlink sockets made inside each namespace, their messages encoded and decoded by
  pyroute2's message classes (Marshal, ifinfmsg, ifaddrmsg, nsidmsg).
- source: keeps the pod index current in the background, and the kernel's pod maps with it.
- attribute: the pod index (API pods joined with the node's namespaces); a drop's pod tag -> pod and direction;
  pod ids (stable while a tag may be in flight, forgotten a while after the pod went).
- workload: a pod's workload (its Deployment, StatefulSet, ...) from its owners.
"""
