"""routing/exits.py: which exit node a node uses (pure)."""

from __future__ import annotations

from nodeagent.protocol import netmap as nm
from nodeagent.routing.exits import ExitChoice, choose_exit, offers

ME, UK, MAC, OLD = "1" * 40, "2" * 40, "3" * 40, "4" * 40


def netmap(use_exit=None, is_exit=False, routes=(), revoked=()) -> nm.NetMap:
    me = nm.SelfInfo(ME, "belgium", "10.10.10.2", 24, is_exit=is_exit, use_exit=use_exit)
    peers = (nm.Peer(UK, "uk", "10.10.10.1", "0" * 64), nm.Peer(MAC, "mac", "10.10.10.8", "0" * 64),
             nm.Peer(OLD, "old", "10.10.10.9", "0" * 64))
    return nm.NetMap("default", 1, me, peers, tuple(nm.Route(p, v) for p, v in routes),
                     revoked=tuple(nm.Revocation(r, "0" * 64) for r in revoked))


EXITS = [("0.0.0.0/0", UK), ("::/0", UK), ("0.0.0.0/0", OLD), ("192.168.1.0/24", MAC)]


def test_offers_are_the_default_routes_of_peers_that_are_not_revoked():
    assert offers(netmap(routes=EXITS, revoked=[OLD])) == {UK: ("0.0.0.0/0", "::/0")}


def test_the_flag_wins_over_the_dashboard_and_names_compare_without_case():
    m = netmap(use_exit=MAC, routes=[*EXITS, ("0.0.0.0/0", MAC)])
    assert choose_exit(m, "UK", 4) == ExitChoice(UK, "uk", "0.0.0.0/0", "flag")
    assert choose_exit(m, UK, 6) == ExitChoice(UK, "uk", "::/0", "flag")
    assert choose_exit(m, None, 4) == ExitChoice(MAC, "mac", "0.0.0.0/0", "dashboard")
    assert choose_exit(netmap(), None, 4) == ExitChoice()


def test_an_exit_node_that_is_not_approved_or_unknown_or_of_the_other_family_is_not_used():
    m = netmap(routes=EXITS)
    assert "not an approved exit node" in choose_exit(m, "mac", 4).problem
    assert choose_exit(m, "mac", 4).peer_id is None
    assert "no peer" in choose_exit(m, "nobody", 4).problem
    assert choose_exit(netmap(routes=[("0.0.0.0/0", UK)]), "uk", 6).peer_id is None  # no ::/0
    assert choose_exit(netmap(routes=EXITS, revoked=[OLD]), "old", 4).peer_id is None


def test_an_exit_node_uses_no_other():
    choice = choose_exit(netmap(is_exit=True, routes=EXITS), "uk", 4)
    assert choice.peer_id is None and "exit node itself" in choice.problem
