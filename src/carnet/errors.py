"""Domain exceptions. No HTTP types here: each surface maps them in one place."""

from __future__ import annotations

from dataclasses import dataclass, field


def bilingual(fr: str, en: str) -> str:
    """A message in French, then English: how every user-facing error of Carnet reads."""
    return f"{fr} / {en}"


@dataclass
class Issue:
    """One problem, in the vocabulary of FHIR OperationOutcome.issue."""

    severity: str  # fatal | error | warning | information
    code: str  # FHIR issue-type code: invalid, structure, required, value, not-found...
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def to_fhir(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code,
                                  "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class CarnetError(Exception):
    """Base of domain errors; carries one or more issues."""

    code = "exception"

    def __init__(self, message: str, *, issues: list[Issue] | None = None,
                 expression: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue("error", self.code, message, expression or [])]


class Invalid(CarnetError):
    """The input is malformed (bad JSON, wrong shape): HTTP 400."""

    code = "structure"


class Unprocessable(CarnetError):
    """The input is well formed but breaks a rule (profile, value set, business rule): HTTP 422."""

    code = "processing"


class NotFound(CarnetError):
    """Absent, or hidden from the caller: the two are indistinguishable. HTTP 404."""

    code = "not-found"


class Gone(CarnetError):
    """The resource was deleted. HTTP 410."""

    code = "deleted"


class Unauthenticated(CarnetError):
    """No credentials, or credentials that do not check out. HTTP 401."""

    code = "login"


class Forbidden(CarnetError):
    """The caller may know the resource exists but may not do this. HTTP 403."""

    code = "forbidden"


class Conflict(CarnetError):
    """The request conflicts with the current state (duplicates, version races). HTTP 409."""

    code = "conflict"


class PreconditionFailed(CarnetError):
    """If-Match / conditional criteria not met. HTTP 412."""

    code = "conflict"


class MethodNotAllowed(CarnetError):
    code = "not-supported"


class NotSupported(CarnetError):
    """A parameter, modifier or interaction we do not implement: HTTP 400 per FHIR search rules."""

    code = "not-supported"


class TooLarge(CarnetError):
    code = "too-costly"


class Unavailable(CarnetError):
    """A service we depend on (INSi, a national base) cannot answer now; nothing was changed. HTTP 503."""

    code = "transient"


class SlowClient(CarnetError):
    """The client took longer than allowed to send its request (a trickled body). HTTP 408."""

    code = "timeout"


class TimedOut(CarnetError):
    """The request's work ran longer than allowed and was stopped; nothing was changed. HTTP 503."""

    code = "timeout"
