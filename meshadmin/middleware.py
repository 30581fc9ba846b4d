"""Request-body cap: anything larger than DATA_UPLOAD_MAX_MEMORY_SIZE is answered 413.

Django alone raises RequestDataTooBig (a 400) only when a view reads request.body, and only
when Content-Length is declared: under ASGI a chunked body with no Content-Length is read whole.
We answer before the view runs: from Content-Length when given, otherwise by reading at most
limit + 1 bytes of the stream and keeping them as the request body.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


def too_large_body(limit: int) -> dict[str, str]:
    """The 413's JSON body, here and in body_cap.py (which answers before Django runs)."""
    return {"detail": f"request body is larger than {limit} bytes"}


def _too_large() -> JsonResponse:
    return JsonResponse(too_large_body(settings.DATA_UPLOAD_MAX_MEMORY_SIZE), status=413)


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            length = request.META.get("CONTENT_LENGTH") or ""
            try:
                declared = int(length) if length else None
            except ValueError:
                return JsonResponse({"detail": "invalid Content-Length"}, status=400)
            if declared is not None and declared > limit:
                return _too_large()
            if declared is None:
                data = request.read(limit + 1)
                if len(data) > limit:
                    return _too_large()
                request._body = data  # what request.body returns from now on (Django's cache)
        return self.get_response(request)
