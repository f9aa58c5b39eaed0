"""node: what the node itself knows, read from the kernel: its network namespaces, their
addresses and veths, and doing one thing inside a namespace. Nothing here knows about
Kubernetes, BPF or drops; everything above may use it.

- nsexec: a socket made, a command run or a file read inside another network namespace.
- namespaces: the node's namespaces found (/run/netns, /proc) and named; a user's --netns
  checked to be one.
- table: the namespaces, their addresses and host veths as netdrop's types (NetnsInfo,
  NodeSnapshot), kept one change at a time (NodeTable).
- rtnl: rtnetlink sockets made inside each namespace, their messages encoded and decoded by
  pyroute2's message classes (Marshal, ifinfmsg, ifaddrmsg, nsidmsg).
- scan: reads them (NodeScanner): everything at start and as a safety net, else what changed.
- events: the node namespace's link, address and namespace-id notifications and /run/netns
  (inotify), folded into what to look at again.
"""
