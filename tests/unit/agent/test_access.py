"""Who may scrape: the gate's decisions, its caches and limits, on a reviewer that
answers as the API server's TokenReview and SubjectAccessReview would."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.agent import serveauth
from tracer.agent.access import (ALLOW_TTL, DENY_TTL, REVIEW_BURST, Attributes, Identity, KubeGate, Later,
                           ReviewUnavailable, bearer_token, check)
from tracer.errors import UserError

ATTRS = Attributes("get", "nodes", "metrics", "node-a")


class Reviewer:
    def __init__(self) -> None:
        self.users = {"good": Identity("prom", groups=("system:authenticated",)), "tenant": Identity("tenant")}
        self.allowed = {"prom"}
        self.calls = {"authn": 0, "authz": 0}
        self.down = False

    def authenticate(self, token: str) -> Identity | None:
        self.calls["authn"] += 1
        if self.down:
            raise ReviewUnavailable("the API server at https://10.96.0.1:443 did not answer in time")
        return self.users.get(token)

    def authorize(self, who: Identity, attrs: Attributes) -> bool:
        self.calls["authz"] += 1
        assert attrs == ATTRS
        return who.username in self.allowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate() -> tuple[KubeGate, Reviewer, Clock]:
    r, c = Reviewer(), Clock()
    return KubeGate(r, ATTRS, clock=c), r, c


def test_no_token_unknown_token_not_permitted_and_permitted():
    g, _, _ = gate()
    assert g.check("/metrics", None).status == 401
    assert g.check("/metrics", "Basic Zm9vOmJhcg==").status == 401
    assert g.check("/metrics", "Bearer nope").status == 401
    v = g.check("/metrics", "Bearer tenant")
    assert v.status == 403 and v.why == "tenant may not get nodes/metrics node-a"
    assert g.check("/metrics", "bearer good").allowed      # RFC 6750: the scheme is case-insensitive


def test_answers_are_kept_briefly_and_a_refusal_more_briefly():
    g, r, c = gate()
    for _ in range(10):
        assert g.check("/metrics", "Bearer good").allowed
        assert g.check("/metrics", "Bearer tenant").status == 403
    assert r.calls == {"authn": 2, "authz": 2}
    r.allowed.add("tenant")                 # a grant made: seen once the refusal expires
    c.now += DENY_TTL + 0.1
    assert g.check("/metrics", "Bearer tenant").allowed
    r.allowed.discard("prom")               # a grant revoked: seen within the allowed answer's life
    c.now += ALLOW_TTL + 0.1
    assert g.check("/metrics", "Bearer good").status == 403


def test_an_api_that_cannot_be_asked_is_a_503_not_kept():
    g, r, _ = gate()
    r.down = True
    v = g.check("/metrics", "Bearer good")
    # Said to whoever asked, token or not: nothing about the API server's address or error.
    assert v.status == 503 and "did not answer" in v.why and "10.96" not in v.why
    r.down = False
    assert g.check("/metrics", "Bearer good").allowed


def test_made_up_tokens_cannot_turn_the_agent_into_a_flood_of_reviews():
    g, r, c = gate()
    statuses = [g.check("/metrics", f"Bearer made-up-{i}").status for i in range(200)]
    assert statuses.count(401) == REVIEW_BURST and statuses.count(429) == 200 - REVIEW_BURST
    assert r.calls["authn"] == REVIEW_BURST
    c.now += 1.0                              # the bucket refills: a real scraper gets through
    assert g.check("/metrics", "Bearer good").allowed


def test_a_flood_of_made_up_tokens_never_locks_a_real_scraper_out():
    """100 made-up tokens a second for 5 minutes beside a scraper every 15 s: its token's answer
    expires every minute, and it is reviewed again outside the budget the flood empties."""
    g, r, c = gate()
    assert g.check("/metrics", "Bearer good").allowed
    answers, t = [], 0
    for second in range(300):
        for i in range(100):
            g.check("/metrics", f"Bearer flood-{second}-{i}")
        c.now += 1.0
        if second % 15 == 14:
            answers.append(g.check("/metrics", "Bearer good").status)
            t += 1
    assert answers == [200] * t
    assert r.calls["authn"] <= 300 * 10 + REVIEW_BURST + 10     # the flood costs the API at most the budget


def test_what_is_known_is_answered_without_asking():
    g, r, _ = gate()
    assert g.cached("/metrics", None).status == 401
    assert g.cached("/metrics", "Bearer good") is None          # to be asked, in a worker
    assert g.ask("/metrics", "Bearer good").allowed
    calls = dict(r.calls)
    assert g.cached("/metrics", "Bearer good").allowed          # kept: no worker, no review
    assert g.cached("/metrics", "Bearer tenant") is None
    assert g.ask("/metrics", "Bearer tenant").status == 403
    assert g.cached("/metrics", "Bearer tenant").status == 403
    assert r.calls["authn"] == calls["authn"] + 1


def test_memory_stays_bounded_whatever_tokens_clients_send():
    g, _, c = gate()
    for i in range(5000):
        c.now += 0.2
        g.check("/metrics", f"Bearer t{i}")
    assert len(g._users._items) <= 1024


@given(st.text(max_size=300))
def test_any_authorization_header_gives_a_token_of_safe_characters_or_none(header):
    token = bearer_token(header)
    assert token is None or (token and all(c.isascii() and not c.isspace() for c in token))


def test_later_says_starting_until_the_node_is_known():
    later = Later()
    assert check(later, "/metrics", "Bearer good").status == 503
    later.gate, _, _ = gate()
    assert check(later, "/metrics", "Bearer good").allowed


@pytest.mark.parametrize(("host", "auth", "insecure", "want"), [
    ("127.0.0.1", None, False, (False, False)),
    ("::1", None, False, (False, False)),
    ("0.0.0.0", None, False, (True, True)),
    ("10.0.0.5", None, False, (True, True)),
    ("127.0.0.1", "kubernetes", False, (True, True)),
    ("0.0.0.0", None, True, (False, False)),
])
def test_loopback_is_open_any_other_address_needs_tokens_over_tls(host, auth, insecure, want):
    p = serveauth.plan(host, auth=auth, insecure=insecure, cert=None, key=None)
    assert (p.authenticate, p.tls) == want


def test_contradicting_guard_options_are_one_line():
    with pytest.raises(UserError, match="go together"):
        serveauth.plan("0.0.0.0", auth=None, insecure=False, cert="c.pem", key=None)
    with pytest.raises(UserError, match="contradict"):
        serveauth.plan("0.0.0.0", auth="kubernetes", insecure=True, cert=None, key=None)
    assert "ANYONE" in serveauth.describe(serveauth.plan("0.0.0.0", auth=None, insecure=True, cert=None, key=None),
                                          "0.0.0.0")
