"""reviews: TokenReview and SubjectAccessReview through the API (access.Reviewer).

The agent's own service account asks; its ClusterRole needs `create` on both
(the `system:auth-delegator` ClusterRole, which the kubelet's delegated
authentication also relies on, grants exactly these two).
"""

from __future__ import annotations

from typing import Any

from .access import Attributes, Identity, ReviewUnavailable
from ..pods.apicall import KubeUnavailable
from ..pods.kube import KubeClient
from ..pods.objects import api_field

_TEXT_CAP = 1024      # a user name, uid or group longer than this is not one the API server made


def _text(value: Any) -> str:
    return value[:_TEXT_CAP] if isinstance(value, str) else ""


class KubeReviewer:
    def __init__(self, kube: KubeClient) -> None:
        from kubernetes import client

        self._kube = kube
        # The client's own connections: every review within the limits of its calls (apicall).
        self._authn = client.AuthenticationV1Api(kube.api_client)
        self._authz = client.AuthorizationV1Api(kube.api_client)

    def authenticate(self, token: str) -> Identity | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        status = self._status(self._authn.create_token_review, body)
        if api_field(status, "authenticated") is not True:
            return None
        user = api_field(status, "user")
        name = _text(api_field(user, "username"))
        if not name:
            return None
        groups = api_field(user, "groups")
        extra = api_field(user, "extra")
        return Identity(
            username=name, uid=_text(api_field(user, "uid")),
            groups=tuple(_text(g) for g in groups[:64]) if isinstance(groups, list) else (),
            extra=tuple(sorted((_text(k), tuple(_text(x) for x in v[:16] if isinstance(x, str)))
                               for k, v in list(extra.items())[:16] if isinstance(v, list)))
            if isinstance(extra, dict) else ())

    def authorize(self, who: Identity, attrs: Attributes) -> bool:
        spec: dict[str, Any] = {
            "user": who.username, "groups": list(who.groups),
            "resourceAttributes": {"verb": attrs.verb, "resource": attrs.resource,
                                   "subresource": attrs.subresource, "name": attrs.name,
                                   **({"namespace": attrs.namespace} if attrs.namespace else {}),
                                   **({"group": attrs.group} if attrs.group else {})},
        }
        if who.uid:
            spec["uid"] = who.uid
        if who.extra:
            spec["extra"] = {k: list(v) for k, v in who.extra}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        return api_field(self._status(self._authz.create_subject_access_review, body), "allowed") is True

    def _status(self, create: Any, body: dict[str, Any]) -> Any:
        try:
            answer = self._kube.call_json(create, body=body)
        except KubeUnavailable as exc:
            raise ReviewUnavailable(str(exc)) from None
        if answer is None:
            raise ReviewUnavailable(f"the API server at {self._kube.server} has no {body['kind']} API")
        return api_field(answer, "status")
