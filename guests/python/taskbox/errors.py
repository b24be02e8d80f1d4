"""How tasks fail, and how the host's capabilities refuse."""

import re


class Retry(Exception):
    """Raise to fail this attempt with a transient error: the host retries the job with
    backoff while it has attempts left.

    `after_ms` asks for the retry no sooner than that many milliseconds from now; none
    leaves it to the host's backoff policy.
    """

    def __init__(self, message: str, after_ms: int | None = None):
        super().__init__(message)
        self.message = message
        self.after_ms = after_ms


class Fatal(Exception):
    """Raise to fail the job for good: it goes to the dead letters without a retry."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class CapabilityError(Exception):
    """A host capability (SQL, events, jobs, HTTP) refused or failed a call.

    `kind` is the error's case in the WIT contract, such as `denied` or `unavailable`;
    `detail` is its payload (the database or channel refused, the backend's message).
    Left uncaught, it fails the job: retryably when `retryable`, fatally otherwise.
    """

    #: The kinds worth retrying the job for.
    transient: frozenset[str] = frozenset({"unavailable"})

    def __init__(self, kind: str, detail: object = None):
        self.kind = kind
        self.detail = detail
        super().__init__(self.describe())

    @property
    def retryable(self) -> bool:
        """Whether running the job again later may succeed."""
        return self.kind in self.transient

    def describe(self) -> str:
        """The message: the kind, and the detail when there is one."""
        return self.kind if self.detail is None else f"{self.kind}: {self.detail}"

    @classmethod
    def from_wit(cls, error: object) -> "CapabilityError":
        """Converts a generated WIT error variant (such as `Error_TooLarge("16MiB")`)."""
        return cls(case_name(error), getattr(error, "value", None))


def case_name(variant: object) -> str:
    """The WIT case name of a generated variant value: `Error_TooLarge` is `too-large`."""
    case = type(variant).__name__.split("_", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", case).lower()
