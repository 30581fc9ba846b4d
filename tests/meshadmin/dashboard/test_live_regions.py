"""The pages' live regions (static/js/live.js re-fetches each `data-live-region` after a change):
every region on every page answers with its own partial, a region's refresh reads only what it
shows, and a page a failed form sent back names the GET address its regions come from."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from meshadmin.mesh.models import Tag
from meshadmin.mesh.services import policies
from meshadmin.telemetry.models import Sample

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def regions(page: str) -> list[str]:
    return re.findall(r'<div id="([\w-]+)" data-live-region>', page)


def live_url(page: str) -> str | None:
    """The GET address a page names for its live regions; None: its own address as it stands."""
    m = re.search(r'<body[^>]* data-live-url="([^"]*)"', page)
    return None if m is None else html_lib.unescape(m.group(1))


@pytest.mark.parametrize("path, expected", [
    ("/policy/?network=default", {"policy-rules", "policy-tags", "policy-groups", "policy-reach",
                                  "policy-drops"}),
    ("/routes/", {"routes-table"}),
    ("/tokens/", {"tokens-table"}),
    ("/nodes/", {"nodes-table"}),
    ("/audit/", {"audit-table"}),
    ("/", {"overview-live"}),
])
def test_every_live_region_answers_with_its_own_partial(admin, mesh, path, expected):
    page = admin.get(path).content.decode()
    assert set(regions(page)) == expected
    for region in regions(page):
        part = admin.get(path, headers={**HX, "HX-Target": f"div#{region}"}).content.decode()
        assert "<html" not in part, f"{path} answers {region} with the whole page"
        assert 'data-live-region' not in part, f"{path}: {region}'s partial holds the region itself"
        assert part.strip(), region


def test_the_policy_tables_follow_the_policy(admin, mesh):
    target = {**HX, "HX-Target": "div#policy-rules"}
    assert 'data-rule="1"' not in admin.get("/policy/?network=default", headers=target).content.decode()
    policies.create_rule(mesh["uk"].network, sources="*", destinations="*", protocol="udp", ports="53")
    part = admin.get("/policy/?network=default", headers=target).content.decode()
    assert 'data-rule="1"' in part and ">udp<" in part


def test_a_region_refresh_reads_only_what_it_shows(admin, mesh):
    def tables_read(region: str) -> str:
        with CaptureQueriesContext(connection) as queries:
            admin.get("/policy/?network=default", headers={**HX, "HX-Target": f"div#{region}"})
        return " ".join(q["sql"] for q in queries.captured_queries)

    samples, tags = Sample._meta.db_table, Tag._meta.db_table
    rules = tables_read("policy-rules")
    assert samples not in rules and f'"{tags}"' not in rules
    assert samples in tables_read("policy-drops")
    assert samples not in tables_read("policy-tags")


def test_a_page_a_failed_form_sent_back_names_the_get_address_of_its_regions(admin, mesh, csrf_post):
    # a GET page is asked at its own address as it stands (a filter typed on it is in it)
    assert live_url(admin.get("/policy/?network=default").content.decode()) is None
    assert live_url(admin.get("/nodes/?q=uk").content.decode()) is None
    # a rule refused: the page comes back from the form's action, which answers only POST
    refused = csrf_post(admin, "/policy/rules/new", {"network": "default", "sources": "*",
                                                     "destinations": "*", "protocol": "tcp", "ports": "x"})
    assert refused.status_code == 400
    assert live_url(refused.content.decode()) == "/policy/?network=default"
    refused = csrf_post(admin, "/routes/new", {"via": "", "prefix": "not a prefix"})
    assert refused.status_code == 400
    assert live_url(refused.content.decode()) == "/routes/"
    # a form page without live regions, sent back by its POST: nothing to refresh from
    refused = csrf_post(admin, "/tokens/new", {"uses": "0"})
    assert refused.status_code == 400
    assert live_url(refused.content.decode()) == ""
