"""User-supplied strings render as text; pages carry a strict CSP and no inline script."""

import json
import re

import pytest

XSS_NAME = "<script>alert(1)</script>"  # the name the `mesh` fixture gives its third node

pytestmark = pytest.mark.django_db

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_a_node_named_like_a_script_tag_renders_as_text_on_every_page(admin, mesh, csrf_post):
    from meshadmin.mesh.services.routes import create_route

    create_route(mesh["xss"], "10.99.0.0/16")
    pages = ["/", "/map/", "/nodes/", f"/nodes/{mesh['xss'].peer_id}/", "/routes/", "/audit/",
             f"/nodes/{mesh['xss'].peer_id}/revoke", f"/nodes/{mesh['xss'].peer_id}/delete"]
    for path in pages:
        html = admin.get(path).content.decode()
        assert XSS_NAME not in html, path
        assert "alert(1)" in html, f"{path} should still show the name (escaped)"
    assert ESCAPED in admin.get("/nodes/").content.decode()


def test_the_map_data_island_cannot_close_its_script_element(admin, mesh):
    html = admin.get("/map/").content.decode()
    island = re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', html, re.S)
    assert island is not None
    assert "<" not in island.group(1), "json_script escapes < so the name cannot end the element"
    labels = {n["data"]["label"] for n in json.loads(island.group(1))["nodes"]}
    assert XSS_NAME in labels


def test_a_hostile_token_node_name_is_escaped_and_shell_quoted(admin, network, csrf_post):
    response = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "1h",
                                                "node_name": "x; rm -rf / <b>"})
    html = response.content.decode()
    assert "<b>" not in html
    assert "--name &#x27;x; rm -rf / &lt;b&gt;&#x27;" in html


def test_pages_send_a_strict_content_security_policy(admin, mesh):
    policy = admin.get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy


def test_no_page_has_inline_script_or_inline_event_handlers(admin, viewer, mesh, network, csrf_post):
    pid = mesh["uk"].peer_id
    pages = ["/", "/map/", "/nodes/", f"/nodes/{pid}/", f"/nodes/{pid}/revoke", "/tokens/", "/tokens/new",
             "/routes/", "/audit/"]
    bodies = [admin.get(p).content.decode() for p in pages]
    bodies.append(csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "1h"})
                  .content.decode())
    bodies.append(viewer.get("/").content.decode())
    for html in bodies:
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, tag
        assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
        assert not re.search(r"\sstyle\s*=", html), "inline style attribute"
