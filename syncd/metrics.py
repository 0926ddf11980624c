"""What syncd counts, for `/metrics` (Prometheus text format, prometheus-client).

Counters are bumped where things happen (the inbox, the publisher, the job worker, the
QBO client's hook); gauges that are the store's state (jobs waiting, outbox depth, the
oldest waiting webhook) are read from the store when `/metrics` is asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from syncd.models import ChangeSet

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_IN = Counter(
    "syncd_messages_in",
    "CRM messages handled, by type and outcome",
    ["type", "outcome"],
    registry=REGISTRY,
)
UNSERVED = Counter(
    "syncd_messages_unserved_total",
    "CRM messages refused because their topic names a tenant this syncd does not serve",
    registry=REGISTRY,
)
WEBHOOKS_GIVEN_UP = Counter(
    "syncd_webhooks_given_up_total",
    "Webhook notifications whose fetch kept failing, left to reconciliation (CDC)",
    registry=REGISTRY,
)
DRIFT_OPEN = Gauge(
    "syncd_drift_open",
    "Differences between the CRM and QBO the tenant's latest drift check found",
    ["tenant"],
    registry=REGISTRY,
)
DRIFT_CHECKED = Counter(
    "syncd_drift_checked",
    "Drift checks run, by tenant",
    ["tenant"],
    registry=REGISTRY,
)
RECONCILE_ROUNDS = Counter(
    "syncd_reconcile_rounds",
    "Reconciliation rounds run (each one over every tenant it can reach)",
    registry=REGISTRY,
)
MESSAGES_OUT = Counter(
    "syncd_messages_out",
    "Messages published to the CRM and acknowledged by the broker, by kind",
    ["kind"],
    registry=REGISTRY,
)
MOVES = Counter(
    "syncd_moves",
    "Status moves, by where they came from (crm, qbo) and result (applied, refused)",
    ["source", "result"],
    registry=REGISTRY,
)
QBO_REQUESTS = Counter(
    "syncd_qbo_requests",
    "QBO API requests, by operation (read, write) and HTTP status",
    ["operation", "status"],
    registry=REGISTRY,
)
QBO_LATENCY = Histogram(
    "syncd_qbo_request_seconds",
    "QBO API request latency, by operation",
    ["operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QBO_READS_MONTH = Counter(
    "syncd_qbo_reads",
    "QBO reads by company and calendar month (Intuit meters reads: qbo.md §10)",
    ["realm", "month"],
    registry=REGISTRY,
)
PRUNED = Counter(
    "syncd_pruned",
    "Finished records deleted by retention, by kind ([store] keep_*_days)",
    ["kind"],
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "syncd_job_retries",
    "QBO jobs put back for another try, by kind",
    ["kind"],
    registry=REGISTRY,
)
JOBS = Gauge(
    "syncd_jobs",
    "QBO jobs not finished, by status (pending, in_flight)",
    ["status"],
    registry=REGISTRY,
)
OUTBOX = Gauge(
    "syncd_outbox_depth",
    "Messages for the CRM not yet acknowledged by the broker",
    registry=REGISTRY,
)
LEASES = Gauge(
    "syncd_leases_held",
    "Leases this replica holds: its realms, and the leader's chores when it leads",
    registry=REGISTRY,
)
WEBHOOK_LAG = Gauge(
    "syncd_webhook_lag_seconds",
    "Age of the oldest stored webhook body not yet applied (0: none waiting)",
    registry=REGISTRY,
)
RECONCILED_AGE = Gauge(
    "syncd_reconciliation_age_seconds",
    "Seconds since the last reconciliation pass of a tenant",
    ["tenant"],
    registry=REGISTRY,
)
TOKEN_EXPIRY = Gauge(
    "syncd_token_seconds_to_expiry",
    "Seconds until a tenant's QBO refresh token expires (reconnect before it does)",
    ["tenant"],
    registry=REGISTRY,
)


def decided(changes: ChangeSet, source: str) -> None:
    """Count what one committed ChangeSet decided: messages in, moves applied or refused."""
    for entry in changes.ledger:
        MESSAGES_IN.labels(entry.type or "unknown", entry.outcome.value).inc()
    applied = sum(1 for h in changes.history if h.from_status != h.to_status)
    if applied:
        MOVES.labels(source, "applied").inc(applied)
    refused = sum(1 for f in changes.failures if f.code == "move_refused")
    if refused:
        MOVES.labels(source, "refused").inc(refused)


def published(topics: Iterable[str], prefix: str) -> None:
    """Count messages the broker acknowledged, by kind (`sync/invoice`, `out/…`)."""
    for topic in topics:
        MESSAGES_OUT.labels(message_kind(topic, prefix)).inc()


def message_kind(topic: str, prefix: str) -> str:
    """`P/T/sync/invoice/INV-1` → `sync/invoice`; `P/T/out/invoice/set_status` as is."""
    parts = topic.removeprefix(prefix + "/").split("/")[1:]
    if parts[:1] == ["sync"]:
        return "/".join(parts[:2])
    return "/".join(parts)


def qbo_call(
    realm: str, operation: str, status: int, seconds: float, at: datetime
) -> None:
    """The QBO client's hook: one request answered (status 0: no answer)."""
    QBO_REQUESTS.labels(operation, str(status)).inc()
    QBO_LATENCY.labels(operation).observe(seconds)
    if operation == "read":
        QBO_READS_MONTH.labels(realm, at.strftime("%Y-%m")).inc()
