"""Link election (control/election.py): both sides of a pair keep the same control link, whatever
order the links arrive in, and a redial by the same side replaces the old link."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.control.election import keep_existing_link

LOW, HIGH = "11" * 20, "22" * 20
peer_ids = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)


def survivor(local: str, remote: str, first: str, second: str) -> str:
    """The dialer of the link `local` keeps when the link dialed by `first` is up and the one
    dialed by `second` arrives."""
    return first if keep_existing_link(local, remote, first, second) else second


@pytest.mark.parametrize(("existing", "new"), list(itertools.product([LOW, HIGH], repeat=2)))
def test_both_sides_decide_alike(existing, new):
    assert keep_existing_link(LOW, HIGH, existing, new) == keep_existing_link(HIGH, LOW, existing, new)


@pytest.mark.parametrize("dialer", [LOW, HIGH])
@pytest.mark.parametrize(("local", "remote"), [(LOW, HIGH), (HIGH, LOW)])
def test_a_redial_by_the_same_side_replaces_the_old_link(local, remote, dialer):
    assert keep_existing_link(local, remote, dialer, dialer) is False


@pytest.mark.parametrize(("local", "remote"), [(LOW, HIGH), (HIGH, LOW)])
def test_when_both_dial_the_link_dialed_by_the_lower_id_wins(local, remote):
    assert keep_existing_link(local, remote, LOW, HIGH) is True  # the lower id's link is up: kept
    assert keep_existing_link(local, remote, HIGH, LOW) is False  # the lower id's link replaces


@given(peer_ids, peer_ids)
def test_any_pair_ends_with_the_link_of_the_lower_id_on_both_sides_in_either_order(x, y):
    if x == y:
        return
    for first, second in ((x, y), (y, x)):
        assert survivor(x, y, first, second) == survivor(y, x, first, second) == min(x, y)
