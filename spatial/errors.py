"""Domain errors with a stable code, a Chinese-first message and a location; no HTTP here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self


@dataclass
class Where:
    """Where a problem sits: a feature of an upload, a field, a coordinate."""

    feature_index: int | None = None
    id: str | int | None = None
    field: str | None = None
    location: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the non-empty parts."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Problem:
    """One problem: stable code, message in Chinese and English, and where."""

    code: str
    message_zh: str
    message_en: str
    where: Where = field(default_factory=Where)
    details: dict[str, Any] | None = None
    """Figures that help to act on the problem (e.g. how many features still depend on a unit)."""

    @property
    def message(self) -> str:
        """Return the message, Chinese first, English after."""
        return f"{self.message_zh} ({self.message_en})"

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON body of this problem."""
        body = {"code": self.code, "message": self.message, "where": self.where.as_dict()}
        if self.details is not None:
            body["details"] = self.details
        return body


class GuatuError(Exception):
    """Base of every error guatu reports to a user."""

    kind = "invalid"

    def __init__(self, problems: Problem | list[Problem]) -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__(self.problems[0].message)

    @classmethod
    def one(cls, code: str, zh: str, en: str, **where: Any) -> Self:
        """Build the error from a single problem."""
        return cls(Problem(code, zh, en, Where(**where)))

    @property
    def code(self) -> str:
        """Return the code of the first problem (the whole error's code)."""
        return self.problems[0].code


class InvalidInput(GuatuError):
    """The request is well-formed but its content breaks a rule."""


class MalformedInput(GuatuError):
    """The request cannot be read at all (not JSON, wrong shape)."""

    kind = "malformed"


class TooLarge(GuatuError):
    """The request is larger than the configured limit."""

    kind = "too_large"


class TooSlow(GuatuError):
    """The client sends its request too slowly to be worth the place it holds."""

    kind = "too_slow"


class Unavailable(GuatuError):
    """The database failed under the request; nothing of it was written."""

    kind = "unavailable"


class NotFound(GuatuError):
    """The named layer or feature does not exist."""

    kind = "not_found"


class Conflict(GuatuError):
    """The write clashes with what is stored (a duplicate natural key, dependents of a unit)."""

    kind = "conflict"


class Busy(GuatuError):
    """The server is at its limit for this kind of work; the client should retry after a while."""

    kind = "busy"
    retry_after = 10
    """Seconds after which a retry is sensible."""


class TooMany(Busy):
    """This client already holds its share of the places for this kind of work."""

    kind = "too_many"


class Unauthorized(GuatuError):
    """Nobody is signed in (or the token is not valid)."""

    kind = "unauthorized"


class Forbidden(GuatuError):
    """The signed-in user may not do this, or not here."""

    kind = "forbidden"


class PreconditionFailed(GuatuError):
    """The write was made against another version than the stored one (If-Match)."""

    kind = "precondition_failed"

    def __init__(self, problems: Problem | list[Problem], current: dict[str, Any] | None = None) -> None:
        super().__init__(problems)
        self.current = current
