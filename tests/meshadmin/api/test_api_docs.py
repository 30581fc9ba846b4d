"""docs/api.md stays true: its table lists exactly the operator operations of the OpenAPI schema,
and every curl example calls one of them with a method it has."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"
NODE_SIDE = re.compile(r"^/api/(enroll|auth/|peers/|telemetry/)")


def _schema_operations(client) -> set[tuple[str, str]]:
    paths = client.get("/api/schema").json()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() if not NODE_SIDE.match(path)
            for method in ops}


def _as_schema_path(path: str) -> str:
    return re.sub(r"<(\w+)>", lambda m: "{" + {"id": "ID"}.get(m.group(1), m.group(1)) + "}", path)


def test_the_operations_table_is_the_schema(client):
    table = re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/api/[^`]+)` \|", DOC.read_text(), re.MULTILINE)
    documented = {(method, _as_schema_path(path)) for method, path in table}
    in_schema = {(m, re.sub(r"\{(token_id|route_id|tag_id|group_id|rule_id)\}", "{ID}", p))
                 for m, p in _schema_operations(client)}
    assert documented == in_schema


def test_every_curl_example_calls_a_documented_operation(client):
    in_schema = {(m, re.sub(r"\{\w+\}", "X", p)) for m, p in _schema_operations(client)}
    calls = 0
    for command in re.findall(r"curl [^\n]*", DOC.read_text().replace("\\\n", " ")):
        method = re.search(r"-X (\w+)", command)
        url = re.search(r'\$SHADOWMESH_URL(/api/[^"?\s]*)', command)
        assert url, command
        path = re.sub(r"\$(PEER_ID|EXIT_ID|TOKEN_ID|ROUTE_ID)", "X", url.group(1))
        path = re.sub(r"^/api/networks/[^/]+/", "/api/networks/X/", path)  # a network named in the example
        assert ((method.group(1) if method else "GET"), path) in in_schema, command
        calls += 1
    assert calls >= 12
