"""Attack 25 (docs/threat-model.md): every unauthenticated door of the HTTP API is limited per
client address, a budget nobody else can spend, and the limiter's key cannot be picked by the
caller: X-Forwarded-For counts only when it comes from a trusted proxy.

The websocket's door (/ws/agent/) is in tests/meshadmin/realtime/test_agent_limits.py."""

import secrets

import pytest

from meshadmin.client_address import parse_trusted_proxies

pytestmark = pytest.mark.django_db

ENTRY_POINTS = [
    ("enroll", "/api/enroll", {"token": "t", "name": "n", "public_key": "AAAA"}),
    ("auth", "/api/auth/challenge", {"peer_id": "ab" * 20}),
    ("auth", "/api/auth/verify", {"peer_id": "ab" * 20, "challenge": "AAAA", "signature": "AAAA"}),
    ("bearer", "/api/peers/register",
     {"ip": "198.18.0.3", "port": 8443, "udp_port": 9443, "is_public": False}),
]


def _limits(settings, **limits):
    settings.SHADOWMESH_RATE_LIMITS = {"enroll": 0, "auth": 0, "auth_peer": 0, "bearer": 0, **limits}


def _post(client, path, body, **extra):
    if path == "/api/peers/register":
        client.bearer = "not-a-session-token-" + secrets.token_hex(8)
    return client.post(path, body, **extra)


def test_addresses_that_name_a_peer_never_lock_it_out_of_auth(settings, api_factory, belgium):
    """Peer ids are public. Before, /api/auth/* also had a budget per named peer id shared by every
    address: 30 requests a minute naming a node, from anywhere, and the node itself got 429."""
    _limits(settings, auth=10, auth_peer=3)
    ident, _ = belgium
    net = "198.19.7"
    for i in range(20):  # twenty attackers, each spending its whole budget on belgium's id
        attacker = api_factory(f"{net}.{i + 1}")
        naming = {"peer_id": ident.peer_id}
        codes = [attacker.post("/api/auth/challenge", naming).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        bogus = {"peer_id": ident.peer_id, "challenge": "AAAA", "signature": "AAAA"}
        assert attacker.post("/api/auth/verify", bogus).status_code == 429
    # belgium, from its own address, is not affected at all
    node = api_factory(f"{net}.200")
    assert node.login(ident)


def test_one_address_naming_one_peer_has_a_budget_of_its_own(settings, api_factory, belgium, mac):
    _limits(settings, auth=100, auth_peer=3)
    be, _ = belgium
    mac_ident, _ = mac
    net = "198.19.7"
    noisy = api_factory(f"{net}.1")
    codes = [noisy.post("/api/auth/challenge", {"peer_id": be.peer_id}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = noisy.post("/api/auth/challenge", {"peer_id": be.peer_id})
    assert limited.json()["detail"].startswith("too many") and limited["Retry-After"] == "60"
    # the same address may still ask about another peer, and another address about this one
    assert noisy.post("/api/auth/challenge", {"peer_id": mac_ident.peer_id}).status_code == 200
    assert api_factory(f"{net}.2").post("/api/auth/challenge", {"peer_id": be.peer_id}).status_code == 200


@pytest.mark.parametrize(("scope", "path", "body"), ENTRY_POINTS, ids=[p for _, p, _ in ENTRY_POINTS])
def test_a_forged_forwarded_for_from_an_untrusted_hop_does_not_change_the_key(settings, api_factory,
                                                                               scope, path, body):
    _limits(settings, **{scope: 3})
    settings.SHADOWMESH_TRUSTED_PROXIES = parse_trusted_proxies(["127.0.0.1"])  # not the caller
    net = "198.19.7"
    caller = api_factory(f"{net}.1")
    codes = [_post(caller, path, body, HTTP_X_FORWARDED_FOR=f"198.18.0.{i}").status_code for i in range(6)]
    assert 429 not in codes[:3] and codes[3:] == [429, 429, 429]
    # another address has its own budget
    assert _post(api_factory(f"{net}.2"), path, body).status_code != 429


@pytest.mark.parametrize(("scope", "path", "body"), ENTRY_POINTS, ids=[p for _, p, _ in ENTRY_POINTS])
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(settings, api_factory, scope, path, body):
    _limits(settings, **{scope: 3})
    net = "198.19.7"
    proxy = f"{net}.250"
    settings.SHADOWMESH_TRUSTED_PROXIES = parse_trusted_proxies([f"{net}.250/32"])
    through = api_factory(proxy)
    # the proxy appends the address it saw; what the client wrote is to the left and ignored
    codes = [_post(through, path, body, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}, {net}.1").status_code
             for i in range(5)]
    assert 429 not in codes[:3] and codes[3:] == [429, 429]
    # another client behind the same proxy is not limited by the first one
    assert _post(through, path, body, HTTP_X_FORWARDED_FOR=f"{net}.2").status_code != 429
    # the proxy itself is never limited for its clients: a request without the header is its own
    assert _post(through, path, body).status_code != 429


def test_bad_session_tokens_are_limited_per_address_and_good_ones_still_work(settings, api_factory, belgium):
    _limits(settings, bearer=3)
    ident, _ = belgium
    net = "198.19.7"
    guesser = api_factory(f"{net}.1")
    record = ENTRY_POINTS[3][2]
    codes = [_post(guesser, "/api/peers/register", record).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    # a node with a good token from another address is served
    node = api_factory(f"{net}.2")
    node.login(ident)
    for _ in range(5):
        assert node.get(f"/api/peers/{ident.peer_id}").status_code in (200, 404)
        assert node.post("/api/peers/register", record).status_code == 200
