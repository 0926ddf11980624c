"""The whole exception tree of syncd, each class named for what it asks of the caller.

SyncdError                 base; never raised itself
├── ConfigError            syncd.toml or rules invalid; .problems lists every one
├── InvalidMessageError    an inbound message fails validation: refuse, never retry
└── StoreError             the store cannot be used: crash, the supervisor restarts
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
