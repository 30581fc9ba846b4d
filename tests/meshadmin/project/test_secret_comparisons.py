"""Lint: no `==`/`!=` on secret values in the control plane (TS-2025-003).

Secrets (tokens, challenges, signatures, hashes of them, passwords, keys) are compared by a
database lookup on their hash or with hmac.compare_digest, never with ==, whose run time leaks
how many leading bytes matched.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SECRET_NAME = re.compile(r"(token|secret|signature|challenge|password|passwd|_hash|digest|mac|seed)", re.I)
# names that look secret but hold no secret (compared to constants or None elsewhere are fine)
NOT_SECRET = re.compile(r"(_prefix|_count|_at|_len|length|_size|_id|_type|_kind)$", re.I)


def _name(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name(node.slice) if isinstance(node.slice, ast.Constant) else _name(node.value)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def _is_secret(node) -> bool:
    if isinstance(node, ast.Constant):
        return False  # a literal is public text ("enrollmenttoken" as an object type), not a secret value
    name = _name(node)
    return bool(name) and bool(SECRET_NAME.search(name)) and not NOT_SECRET.search(name)


def _is_trivial(node) -> bool:
    """None / numbers / booleans: comparing against these reveals nothing about a secret."""
    return isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, bool | int))


def find_secret_comparisons(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
            if not isinstance(op, ast.Eq | ast.NotEq):
                continue
            if _is_trivial(left) or _is_trivial(right):
                continue
            if _is_secret(left) or _is_secret(right):
                found.append(f"{filename}:{node.lineno}")
    return found


def test_the_lint_catches_a_plain_token_comparison():
    assert find_secret_comparisons("if token == expected_token: pass", "x.py") == ["x.py:1"]
    assert find_secret_comparisons("ok = row.token_hash != hash_secret(t)", "x.py") == ["x.py:1"]
    assert find_secret_comparisons("if token is None or len(token) == 0: pass", "x.py") == []
    assert find_secret_comparisons("ok = hmac.compare_digest(token, expected)", "x.py") == []
    assert find_secret_comparisons('if body["token"] == sent: pass', "x.py") == ["x.py:1"]
    assert find_secret_comparisons('if token == "s3cret": pass', "x.py") == ["x.py:1"]
    assert find_secret_comparisons('if e.object_type == "enrollmenttoken": pass', "x.py") == []


def test_no_control_plane_code_compares_secrets_with_equality():
    offenders = []
    for path in sorted((ROOT / "meshadmin").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        offenders += find_secret_comparisons(path.read_text(), str(path.relative_to(ROOT)))
    assert offenders == [], "use hmac.compare_digest or a lookup by hash: " + ", ".join(offenders)
