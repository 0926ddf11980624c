"""The whole exception tree of syncd, each class named for what it asks of the caller.

SyncdError                  base; never raised itself
├── ConfigError             syncd.toml or rules invalid; .problems lists every one
├── InvalidMessageError     an inbound message fails validation: refuse, never retry
├── StoreError              the store cannot be used: pause, or exit at start
├── RealmTakenError         a QBO company is already another tenant's: refuse
├── ConnectError            an OAuth connect or callback cannot go on: tell the admin
├── ResolveError            what an invoice names is not in QBO and may not be created
└── QboError                raised only by syncd.qbo; .code and .detail from QBO
    ├── QboTransientError   network, timeout, 5xx, 429 (.retry_after): retry later
    ├── QboAuthError        refresh refused / grant revoked: pause the realm, reconnect
    ├── QboStaleError       stale SyncToken (5010): re-read and retry
    ├── QboNotFoundError    the object is gone (610): follow the rules
    └── QboRejectedError    validation or business fault: fix the data, then retry
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every syncd error."""


class ConfigError(SyncdError):
    """Configuration or rules are invalid; `problems` names each with file and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class InvalidMessageError(SyncdError):
    """An inbound message is refused; `reason` is written for a person."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


class StoreError(SyncdError):
    """The store is unusable (newer schema, corrupt file, disk full)."""


class StaleWriteError(SyncdError):
    """An invoice changed in the store since it was read: nothing was written.

    The caller reads again and decides again (another process got there first).
    """


class ContendedError(StoreError):
    """A message's invoice kept changing under it: not decided, not acked, tried again.

    Replicas writing one invoice at once: a race, never the message's fault, so it is
    never refused for it (the MQTT link pauses and hands the batch over again).
    """


class FencedError(SyncdError):
    """The lease this work was done under was taken over: nothing was written.

    Another replica runs the realm now; it finds the work unfinished and does it.
    """


class RealmTakenError(SyncdError):
    """A QBO company (realm) belongs to at most one tenant; another already holds it."""

    def __init__(self, realm_id: str) -> None:
        super().__init__(f"QBO company {realm_id} is connected to another tenant")
        self.realm_id = realm_id


class ConnectError(SyncdError):
    """A connect or callback that cannot go on; `reason` is for the admin, `status` HTTP."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


class ResolveError(SyncdError):
    """What the invoice names cannot be found in QBO and may not be created."""


class QboError(SyncdError):
    """QBO refused or could not be reached; `code`/`detail` are QBO's when it said."""

    retryable = False

    def __init__(self, message: str, code: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        # a write whose earlier try got no answer (a timeout, a 5xx): QBO may have
        # done it, whatever this last answer says
        self.maybe_written = False


class QboTransientError(QboError):
    """Try again later (network, timeout, 5xx, 429); `retry_after` seconds if known."""

    retryable = True

    def __init__(
        self,
        message: str,
        code: str = "",
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code, detail)
        self.retry_after = retry_after


class QboAuthError(QboError):
    """The company must be reconnected: the grant is gone or refused."""


class QboStaleError(QboError):
    """Someone changed the object since it was read: re-read, re-plan, retry."""

    retryable = True


class QboNotFoundError(QboError):
    """The object does not exist in QBO (deleted, or never there)."""


class QboRejectedError(QboError):
    """QBO refused the data (validation or business rule): fix it, then retry."""
