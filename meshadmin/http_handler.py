"""Django's ASGI handler with the middleware chain and the view run in one thread, as under WSGI.

Django's own ASGI handler builds an async middleware chain: each of Django's middlewares then
runs its `process_request` and `process_response` through `sync_to_async`, and a sync-only one
(WhiteNoise, ours) and the sync views through further adapters, so one API request crosses between
the event loop and its thread 19 times (tests/meshadmin/project/test_http_handler.py counts them),
and every return to the loop waits for whatever the loop is doing. Daphne's loop also serves the
agent sockets: while it handed a change to thousands of them, an enrollment's answer left 0.5-1.3 s
after its view had returned (BENCHMARKS.md, "The change's enrollments, traced").

Every view and middleware here is synchronous, so this handler loads the chain in sync mode (as
WSGIHandler does) and awaits it once, in the request's own thread (Django's
ThreadSensitiveContext per request, as before): the body is read, the request_started and
request_finished signals sent and the response written on the loop as Django does; the chain
and the view in between cost one trip to the thread and back. An async view or middleware would
still work (Django adapts it inside the chain), only without this saving.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

__all__ = ["SyncChainASGIHandler"]


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # not ASGIHandler.__init__, which would load the chain in async mode first
        self.load_middleware(is_async=False)
        chain: Callable[[HttpRequest], HttpResponseBase] = self._middleware_chain  # type: ignore[has-type]
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)
