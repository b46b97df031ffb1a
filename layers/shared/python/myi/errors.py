"""The domain's errors: what went wrong, in words a user can act on, and nothing about HTTP.

Workers, the command line and the API raise the same exceptions; the HTTP layer alone
(:mod:`myi.api.errors`) maps each class to a status and an error code of API.md."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal whose message is shown to the user as it is. ``retry_after_s`` is set when trying
    again later can succeed."""

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = None if retry_after_s is None else max(1, int(retry_after_s))


class InvalidRequest(DomainError):
    """The input is not acceptable; nothing was changed."""


class InvalidState(InvalidRequest):
    """A sign-in's state is unknown, spent, or was started in another browser."""


class NotFound(DomainError):
    """Nothing of the user's has this id."""


class Conflict(DomainError):
    """The user already has one of these running, or the change contradicts what is stored."""


class TooLarge(DomainError):
    """The input is bigger than MYI accepts."""


class RateLimited(DomainError):
    """Too many attempts; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class Unavailable(DomainError):
    """Something MYI depends on failed; nothing was changed and the request may simply be retried."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
