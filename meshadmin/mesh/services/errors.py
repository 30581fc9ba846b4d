"""Typed refusals. `status` is the HTTP status the API answers with; `detail` is safe to show."""

__all__ = [
    "Conflict", "Forbidden", "InvalidInput", "NotAuthenticated", "NotFound", "RateLimited", "ServiceError",
]


class ServiceError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ServiceError):
    status = 400


class NotAuthenticated(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class RateLimited(ServiceError):
    """Too many requests; `retry_after` (seconds) is when the caller's window ends at the latest."""

    status = 429

    def __init__(self, detail: str, retry_after: int = 60) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
