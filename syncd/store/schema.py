"""The store's schema, as an ordered list of migrations (SQLite dialect)."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        tenant TEXT NOT NULL, message_id TEXT NOT NULL, topic TEXT NOT NULL,
        type TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
        received_at TEXT NOT NULL, payload BLOB,
        PRIMARY KEY (tenant, message_id)) WITHOUT ROWID;
    CREATE INDEX messages_deferred ON messages (outcome) WHERE outcome = 'deferred';
    CREATE TABLE invoices (
        tenant TEXT NOT NULL, invoice_id TEXT NOT NULL, status TEXT NOT NULL,
        version INTEGER NOT NULL, sync_state TEXT NOT NULL, data BLOB NOT NULL,
        qbo_id TEXT, qbo_doc_number TEXT, qbo_status TEXT, balance TEXT,
        last_synced_at TEXT, error TEXT, updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, invoice_id)) WITHOUT ROWID;
    CREATE INDEX invoices_sync_state ON invoices (tenant, sync_state);
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
        invoice_id TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL,
        cause TEXT NOT NULL, event_id TEXT NOT NULL, at TEXT NOT NULL);
    CREATE INDEX history_invoice ON history (tenant, invoice_id, seq);
    CREATE TABLE failures (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, invoice_id TEXT,
        operation TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
        attempts INTEGER NOT NULL, retryable INTEGER NOT NULL, event_id TEXT,
        at TEXT NOT NULL, resolved_at TEXT);
    CREATE INDEX failures_tenant ON failures (tenant, seq);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
        payload BLOB NOT NULL, retain INTEGER NOT NULL);
    """,
    # 2: QBO connections, OAuth states, jobs (the intent ledger), links
    """
    ALTER TABLE invoices ADD COLUMN qbo_sync_token TEXT;
    ALTER TABLE invoices ADD COLUMN pushed_body BLOB;
    CREATE TABLE connections (
        tenant TEXT PRIMARY KEY, realm_id TEXT NOT NULL, status TEXT NOT NULL,
        token BLOB NOT NULL, preferences BLOB NOT NULL, connected_at TEXT NOT NULL,
        error TEXT);
    CREATE TABLE oauth_states (
        state TEXT PRIMARY KEY, tenant TEXT NOT NULL, force INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
        invoice_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL, next_attempt_at TEXT NOT NULL, payload BLOB NOT NULL,
        last_error TEXT);
    CREATE INDEX jobs_due ON jobs (status, next_attempt_at);
    CREATE INDEX jobs_invoice ON jobs (tenant, invoice_id, id);
    CREATE UNIQUE INDEX jobs_one_pending ON jobs (tenant, invoice_id, kind)
        WHERE status = 'pending';
    CREATE TABLE links (
        tenant TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, qbo_id TEXT NOT NULL,
        PRIMARY KEY (tenant, kind, key)) WITHOUT ROWID;
    """,
    # 3: QBO webhooks, stored before they are answered, and the events already applied
    """
    CREATE TABLE inbound (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL, received_at TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX inbound_pending ON inbound (done, seq);
    CREATE INDEX invoices_qbo_id ON invoices (tenant, qbo_id);
    CREATE TABLE inbound_events (
        realm_id TEXT NOT NULL, key TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (realm_id, key)) WITHOUT ROWID;
    """,
    # 4: a QBO company belongs to one tenant. Where two held one (a second tenant could
    # consent with the first one's company), the later connection is dropped: it was
    # reading another tenant's books.
    """
    DELETE FROM connections WHERE EXISTS (
        SELECT 1 FROM connections AS first
        WHERE first.realm_id = connections.realm_id AND (
            first.connected_at < connections.connected_at
            OR (first.connected_at = connections.connected_at
                AND first.tenant < connections.tenant)));
    CREATE UNIQUE INDEX connections_realm ON connections (realm_id);
    """,
    # 5: the QBO company a tenant's remembered references (links, invoices' QBO ids)
    # belong to; it outlives a disconnect, so a later connection to another company
    # starts clean instead of using the old company's ids
    # (`since`: when the tenant first connected to QBO, for `[sync] since`)
    """
    CREATE TABLE books (
        tenant TEXT PRIMARY KEY, realm_id TEXT NOT NULL, since TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO books SELECT tenant, realm_id, connected_at FROM connections;
    """,
    # 6: when syncd first heard of each invoice (HL8, when the CRM gives no created_at)
    """
    ALTER TABLE invoices ADD COLUMN first_seen_at TEXT;
    UPDATE invoices SET first_seen_at = coalesce(
        (SELECT min(at) FROM history h
         WHERE h.tenant = invoices.tenant AND h.invoice_id = invoices.invoice_id),
        updated_at);
    """,
    # 7: the CRM's refresh requests in their own table (they rode in the webhook table)
    """
    CREATE TABLE refreshes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, request BLOB NOT NULL,
        at TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX refreshes_pending ON refreshes (done, seq);
    INSERT INTO refreshes (tenant, request, at)
        SELECT json_extract(CAST(body AS TEXT), '$.syncdRefresh.tenant'),
               json(json_extract(CAST(body AS TEXT), '$.syncdRefresh')), received_at
        FROM inbound WHERE done = 0 AND CAST(body AS TEXT) LIKE '{"syncdRefresh"%';
    UPDATE inbound SET done = 1
        WHERE done = 0 AND CAST(body AS TEXT) LIKE '{"syncdRefresh"%';
    """,
    # 8: typed jobs (a queue, a kind, a subject: no ids packed into kinds), the job a
    # failure came from, and CRM deals in their own table (they rode in `links`)
    """
    ALTER TABLE jobs RENAME COLUMN invoice_id TO queue;
    ALTER TABLE jobs ADD COLUMN subject TEXT NOT NULL DEFAULT '';
    UPDATE jobs SET subject = substr(kind, 14), kind = 'payment.push'
        WHERE kind LIKE 'payment.push:%';
    UPDATE jobs SET subject = substr(queue, instr(queue, ':') + 1)
        WHERE kind IN ('receipt.push', 'customer.push');
    UPDATE jobs SET subject = queue WHERE subject = '';
    DROP INDEX jobs_one_pending;
    CREATE UNIQUE INDEX jobs_one_pending ON jobs (tenant, queue, kind, subject)
        WHERE status = 'pending';
    ALTER TABLE failures ADD COLUMN job_id INTEGER;
    CREATE TABLE deals (
        tenant TEXT NOT NULL, qbo_invoice_id TEXT NOT NULL, deal_id TEXT,
        PRIMARY KEY (tenant, qbo_invoice_id)) WITHOUT ROWID;
    INSERT INTO deals SELECT tenant, key, nullif(qbo_id, '') FROM links WHERE kind = 'deal';
    DELETE FROM links WHERE kind = 'deal';
    """,
    # 9: each invoice row's revision: a write names the one it read (replicas to come)
    """
    ALTER TABLE invoices ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
    """,
    # 10: the expiry warning last given for a connection's grant (30 or 7 days)
    """
    ALTER TABLE connections ADD COLUMN warned INTEGER;
    """,
    # 11: each invoice's due date, so the daily overdue pass asks an index for the few
    # open invoices past due instead of loading every synced invoice; invoices by their
    # last change, so the admin API and page read a page, not the whole table; and by age
    # what retention deletes (the ledger, failures, webhook event keys); unfinished jobs
    # in order, so the next due ones are found without sorting every waiting job
    """
    ALTER TABLE invoices ADD COLUMN due_date TEXT;
    UPDATE invoices SET due_date = date(coalesce(
        json_extract(CAST(pushed_body AS TEXT), '$.DueDate'),
        json_extract(CAST(data AS TEXT), '$.due_date')));
    CREATE INDEX invoices_open_due ON invoices (tenant, due_date)
        WHERE qbo_status IN ('open', 'partially_paid') AND due_date IS NOT NULL;
    CREATE INDEX invoices_recent ON invoices (tenant, updated_at);
    CREATE INDEX messages_received ON messages (received_at);
    CREATE INDEX failures_resolved ON failures (resolved_at) WHERE resolved_at IS NOT NULL;
    CREATE INDEX failures_open_job ON failures (job_id) WHERE resolved_at IS NULL;
    CREATE INDEX inbound_events_at ON inbound_events (at);
    CREATE INDEX jobs_waiting ON jobs (id, next_attempt_at)
        WHERE status IN ('pending', 'in_flight');
    """,
    # 12: QBO reads per company and calendar month (Intuit meters reads: qbo.md §10)
    """
    CREATE TABLE qbo_reads (
        realm_id TEXT NOT NULL, month TEXT NOT NULL, reads INTEGER NOT NULL,
        PRIMARY KEY (realm_id, month)) WITHOUT ROWID;
    """,
    # 13: unfinished jobs by tenant, so each realm's due jobs are found on their own: one
    # tenant's burst no longer fills every round while the others wait
    """
    CREATE INDEX jobs_waiting_tenant ON jobs (tenant, id, next_attempt_at)
        WHERE status IN ('pending', 'in_flight');
    """,
    # 14: a webhook body whose fetch failed is tried again on its own, later, a bounded
    # number of times (it was merged with the realm's newer ones and retried for ever)
    """
    ALTER TABLE inbound ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbound ADD COLUMN next_at TEXT;
    """,
    # 15: the admin page's sessions, so a restart (or another replica) keeps them; the
    # cookie's id is kept only as its SHA-256
    """
    CREATE TABLE admin_sessions (
        sid_hash TEXT PRIMARY KEY, csrf TEXT NOT NULL, expires_at TEXT NOT NULL);
    """,
    # 16: replicas (issue 25): leases (a realm's QBO work, the leader's chores) with an
    # epoch that fences a replica whose lease was taken over, replicas' heartbeats, the
    # realm of each stored webhook body (its owner applies it), the last webhook applied
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY, owner TEXT, epoch INTEGER NOT NULL,
        expires_at TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE replicas (name TEXT PRIMARY KEY, seen_at TEXT NOT NULL) WITHOUT ROWID;
    ALTER TABLE inbound ADD COLUMN realm_id TEXT;
    ALTER TABLE connections ADD COLUMN last_webhook_at TEXT;
    """,
    # 17: messages parked until their invoice's earlier ones are decided (replicas
    # deliver an invoice's messages out of order), found by their invoice
    """
    CREATE TABLE parked (
        tenant TEXT NOT NULL, message_id TEXT NOT NULL, invoice_id TEXT NOT NULL,
        topic TEXT NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL,
        parked_at TEXT NOT NULL, PRIMARY KEY (tenant, message_id));
    CREATE INDEX parked_invoice ON parked (tenant, invoice_id);
    """,
    # 18: the quota a realm's holder spent (its minute's requests, and a grant ahead),
    # which the next holder counts as its own
    """
    ALTER TABLE leases ADD COLUMN spent TEXT;
    """,
    # 19: payments, receipts and refunds and their QBO copies (issue 26): a payment
    # deleted in the CRM or removed in QBO is found by either side's id; credit notes
    """
    CREATE TABLE payments (
        tenant TEXT NOT NULL, kind TEXT NOT NULL, payment_id TEXT NOT NULL,
        invoice_id TEXT NOT NULL, amount TEXT NOT NULL, state TEXT NOT NULL,
        qbo_id TEXT, qbo_invoice_id TEXT, refunds TEXT, at TEXT NOT NULL,
        PRIMARY KEY (tenant, kind, payment_id, invoice_id)) WITHOUT ROWID;
    CREATE INDEX payments_qbo_id ON payments (tenant, qbo_id);
    CREATE INDEX payments_refunds ON payments (tenant, refunds) WHERE refunds IS NOT NULL;
    CREATE TABLE credit_notes (
        tenant TEXT NOT NULL, credit_note_id TEXT NOT NULL, version BIGINT NOT NULL,
        status TEXT NOT NULL, data BLOB NOT NULL, sync_state TEXT NOT NULL,
        qbo_id TEXT, qbo_sync_token TEXT, qbo_doc_number TEXT, qbo_status TEXT,
        remaining_credit TEXT, applied_payment TEXT, pushed_body BLOB, error TEXT,
        last_synced_at TEXT, updated_at TEXT NOT NULL, invoice_id TEXT,
        PRIMARY KEY (tenant, credit_note_id));
    CREATE INDEX credit_notes_invoice ON credit_notes (tenant, invoice_id);
    CREATE INDEX payments_invoice ON payments (tenant, invoice_id);
    """,
    # 20: each tenant's latest drift report (issue 27)
    """
    CREATE TABLE drift (
        tenant TEXT PRIMARY KEY, report BLOB, checked_at TEXT, requested_at TEXT,
        heal INTEGER NOT NULL DEFAULT 0, progress TEXT,
        open INTEGER);
    """,
)
