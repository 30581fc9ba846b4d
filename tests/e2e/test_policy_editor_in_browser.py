"""The access-policy editor in a real browser (Chromium) against a real Daphne: an operator creates a
tag, adds a rule with a typo in its ports and sees the error next to that field with the rest of
the input kept, fixes it, moves a rule, and reads the reachability view. Its own module, so its
server (module-scoped) and its rules touch no other browser test."""

from __future__ import annotations

import pytest

from tests.e2e.test_dashboard_in_browser import (
    WAIT_MS,
    assert_not_reloaded,
    create_token,
    login,
    mark_no_reload,
    wait_live,
    watched,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def rules(page) -> list[str]:
    return [" ".join(row.inner_text().split()[:5]) for row in page.locator("tr[data-rule]").all()]


def test_an_operator_writes_rules_and_sees_refusals_next_to_the_field(server, context, agent_factory):
    page, watch = watched(context)
    login(page, server)
    command = create_token(page, server, uses=2, public=True)  # makes the default network
    hub = agent_factory(command, "hub", public=True)
    hub.start()
    page.goto(server.url + "/policy/")
    page.fill("form[data-testid=tag-form] #id_name", "db")
    page.click("form[data-testid=tag-form] button[type=submit]")
    page.wait_for_selector("tr[data-tag=db]", timeout=WAIT_MS)

    form = "form[data-testid=rule-form]"
    page.fill(f"{form} #id_sources", "tag:db")
    page.fill(f"{form} #id_destinations", "node:hub")
    page.select_option(f"{form} #id_protocol", "tcp")
    page.fill(f"{form} #id_ports", "5432, postgres")
    page.click(f"{form} button[type=submit]")
    error = page.locator(f"{form} [data-field=ports] .errors")
    error.wait_for(timeout=WAIT_MS)
    assert "'postgres' is not a port" in error.inner_text()
    assert page.locator(f"{form} [data-field=sources] .errors").count() == 0
    assert page.input_value(f"{form} #id_sources") == "tag:db", "the rest of the input is kept"
    page.fill(f"{form} #id_ports", "5432")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("tr[data-rule='1']", timeout=WAIT_MS)
    page.fill(f"{form} #id_sources", "*")
    page.fill(f"{form} #id_destinations", "node:hub")
    page.select_option(f"{form} #id_protocol", "icmp")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("tr[data-rule='2']", timeout=WAIT_MS)
    assert rules(page) == ["1 tag:db node:hub tcp 5432", "2 * node:hub icmp every"]

    page.click("tr[data-rule='2'] button[aria-label='Move rule 2 up']")
    page.wait_for_selector("tr[data-rule='1'] >> text=icmp", timeout=WAIT_MS)
    assert rules(page) == ["1 * node:hub icmp every", "2 tag:db node:hub tcp 5432"]

    page.goto(server.url + f"/nodes/{hub.peer_id}/reach")
    assert "hub filters what it receives" in page.inner_text("main")
    # the refused form came back with status 400, which Chromium logs; nothing else went wrong
    assert [e for e in watch.errors if "status of 400" not in e] == [] and watch.dialogs == []
    assert len(watch.errors) == 1


def test_the_policy_page_follows_a_change_made_in_another_tab(server, context):
    """The tables are live regions: a rule and a tag added in a second tab appear in the first
    without a reload, and what the first tab's operator is typing into its forms stays."""
    page, watch = watched(context)
    login(page, server)
    create_token(page, server, uses=1, public=False)  # the default network, if no test made it yet
    page.goto(server.url + "/policy/")
    wait_live(page)
    mark_no_reload(page)
    before = page.locator("tr[data-rule]").count()
    form = "form[data-testid=rule-form]"
    page.fill(f"{form} #id_description", "half typed")  # the first operator is writing a rule

    other, other_watch = watched(context)
    other.goto(server.url + "/policy/")
    other.fill(f"{form} #id_sources", "*")
    other.fill(f"{form} #id_destinations", "*")
    other.select_option(f"{form} #id_protocol", "udp")
    other.fill(f"{form} #id_ports", "53")
    other.click(f"{form} button[type=submit]")
    other.wait_for_selector(f"tr[data-rule='{before + 1}']", timeout=WAIT_MS)
    other.fill("form[data-testid=tag-form] #id_name", "live-tag")
    other.click("form[data-testid=tag-form] button[type=submit]")
    other.wait_for_selector("tr[data-tag=live-tag]", timeout=WAIT_MS)

    page.wait_for_selector(f"tr[data-rule='{before + 1}'] >> text=udp", timeout=WAIT_MS)
    page.wait_for_selector("tr[data-tag=live-tag]", timeout=WAIT_MS)
    assert_not_reloaded(page)
    assert page.input_value(f"{form} #id_description") == "half typed"
    assert watch.errors == [] and watch.dialogs == []
    assert other_watch.errors == [] and other_watch.dialogs == []
