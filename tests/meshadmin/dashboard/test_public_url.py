"""The enroll command and its QR code name SHADOWMESH_PUBLIC_URL, not the host the browser used."""

import re

import pytest

from meshadmin.dashboard.views import enroll_command, qr_svg

pytestmark = pytest.mark.django_db


def _created_page(admin, network, host: str) -> str:
    admin.cookies["csrftoken"] = "x" * 32
    response = admin.post("/tokens/new", {"network": network.pk, "uses": 1, "expires": "1h",
                                          "node_name": "kitchen-pi", "csrfmiddlewaretoken": "x" * 32},
                          HTTP_HOST=host)
    assert response.status_code == 200, response.content[:300]
    return response.content.decode()


def _command(html: str) -> str:
    return re.search(r'<pre id="enroll-command"[^>]*>(.*?)</pre>', html, re.S).group(1).strip()


def _qr(html: str) -> str:
    return re.search(r'<div class="qr"[^>]*>(.*?)</div>', html, re.S).group(1).strip()


def test_a_dashboard_opened_at_loopback_names_the_public_url_in_the_command_and_the_qr_code(
        admin, network, settings):
    settings.SHADOWMESH_PUBLIC_URL = "https://mesh.example.com:8443"
    html = _created_page(admin, network, "127.0.0.1:8000")
    command = _command(html)
    args = dict(zip(command.split()[2::2], command.split()[3::2], strict=True))
    assert args["--server"] == "https://mesh.example.com:8443"
    assert "127.0.0.1" not in command
    # the QR code encodes exactly this command (segno is deterministic)
    token = args["--token"]
    assert _qr(html) == qr_svg(enroll_command("https://mesh.example.com:8443", token, "kitchen-pi")).strip()


def test_without_a_public_url_the_command_names_the_host_the_browser_used(admin, network, settings):
    settings.SHADOWMESH_PUBLIC_URL = None
    command = _command(_created_page(admin, network, "127.0.0.1:8000"))
    assert "--server http://127.0.0.1:8000 " in command
