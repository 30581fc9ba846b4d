"""A test client for the operator operations: JSON in and out, an operator API key as bearer."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client


class OperatorClient:
    def __init__(self, key: str | None, remote_addr: str = "127.0.0.1") -> None:
        self.client = Client(REMOTE_ADDR=remote_addr)
        self.key = key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def _send(self, method: str, path: str, body: Any = None):
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes | str) else json.dumps(body)
            kwargs["content_type"] = "application/json"
        return getattr(self.client, method)(path, **kwargs)

    def get(self, path: str):
        return self._send("get", path)

    def post(self, path: str, body: Any = None):
        return self._send("post", path, body if body is not None else {})

    def patch(self, path: str, body: Any):
        return self._send("patch", path, body)

    def put(self, path: str, body: Any):
        return self._send("put", path, body)

    def delete(self, path: str):
        return self._send("delete", path)
