"""The scheduler's set-based SQL, one named statement each (asyncpg `$n` parameters).

Like procrastinate's queries.sql: every hot-path statement lives here with a line on what it
does, and takes whole columns as arrays (`unnest`, `= ANY`), so a pass of a thousand timers
or a batch of activities costs a handful of round trips whatever its size.
"""

from __future__ import annotations

# name: claim_due_timers
# Due timers of the given partitions, oldest first, whose enrolment nobody else holds: both
# locked, the timers deleted (the transaction that acts on a timer is the one that deletes
# it). A timer whose enrolment is busy (an activity being applied) stays for the next pass.
CLAIM_DUE_TIMERS = """
    WITH due AS (
        SELECT enrollment_id FROM scheduler.timers
        WHERE partition = ANY($1::int[]) AND due_at <= $2
        ORDER BY due_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ), free AS (
        SELECT e.id FROM scheduler.enrollments e
        WHERE e.id IN (SELECT enrollment_id FROM due)
        FOR UPDATE OF e SKIP LOCKED
    )
    DELETE FROM scheduler.timers t USING free
    WHERE t.enrollment_id = free.id
    RETURNING t.enrollment_id, t.step_id, t.due_at, t.partition
"""

# name: next_due_at
# When the earliest timer of the given partitions falls due, looking no further than $2.
NEXT_DUE_AT = """
    SELECT min(due_at) FROM scheduler.timers
    WHERE partition = ANY($1::int[]) AND due_at <= $2
"""

# name: count_due_timers
# How many timers are due and not fired yet (the gauge; read every few seconds, not per pass).
COUNT_DUE_TIMERS = """
    SELECT count(*) FROM scheduler.timers WHERE partition = ANY($1::int[]) AND due_at <= $2
"""

# name: restore_timers
# Put claimed timers back (a timer whose firing failed and will be tried again).
RESTORE_TIMERS = """
    INSERT INTO scheduler.timers (enrollment_id, partition, step_id, due_at)
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[])
    ON CONFLICT (enrollment_id) DO NOTHING
"""

# The enrolment's columns, in the order repository.enrollment_of reads them back: every field.
ENROLLMENT_FIELDS = (
    "id", "journey_id", "journey_version", "customer_key", "entered_at", "step_index",
    "status", "holdout", "exit_reason",
)  # fmt: skip
ENROLLMENT_COLUMNS = ", ".join(f"e.{name}" for name in ENROLLMENT_FIELDS)

# name: enrollments_with_customers
# The enrolments of claimed timers (already locked by the claim) with their customer facts:
# one primary-key probe of customers per enrolment (LATERAL, OFFSET 0). As a plain join the
# planner hashed the whole customers table for every pass of a thousand timers.
ENROLLMENTS_WITH_CUSTOMERS = f"""
    SELECT {ENROLLMENT_COLUMNS}, c.partition, c.profile, c.cart
    FROM scheduler.enrollments e
    CROSS JOIN LATERAL (
        SELECT c.partition, c.profile::text AS profile, c.cart::text AS cart
        FROM scheduler.customers c WHERE c.customer_key = e.customer_key
        OFFSET 0
    ) AS c
    WHERE e.id = ANY($1::bigint[])
"""

# name: active_enrollments_for_update
# Every active enrolment of the batch's customers, locked until the batch commits: one probe
# of enrollments_one_active (led by the customer) per key, LATERAL and OFFSET 0 so it is not
# flattened into a join. `customer_key = ANY(...)` let the planner read every active
# enrolment whenever statistics were missing or stale (a table filling faster than
# autovacuum analyses it), a cost that grew with the table. Rows are locked in the order of
# the keys given (sorted by the caller): transactions lock shared customers in one order.
ACTIVE_ENROLLMENTS_FOR_UPDATE = f"""
    SELECT {ENROLLMENT_COLUMNS}
    FROM unnest($1::text[]) AS k(key)
    CROSS JOIN LATERAL (
        SELECT * FROM scheduler.enrollments e
        WHERE e.customer_key = k.key AND e.status = 'active'
        OFFSET 0
        FOR UPDATE
    ) AS e
    ORDER BY e.id
"""

# name: ever_enrolled
# (journey, customer) pairs that were ever enrolled: for journeys that allow no re-entry.
EVER_ENROLLED = """
    SELECT DISTINCT journey_id, customer_key FROM scheduler.enrollments
    WHERE customer_key = ANY($1::text[]) AND journey_id = ANY($2::text[])
"""

# name: claim_new_activities
# Record activity ids as processed; returns those never processed before.
CLAIM_NEW_ACTIVITIES = """
    INSERT INTO scheduler.processed_activities (event_id, processed_at)
    SELECT unnest($1::text[]), $2
    ON CONFLICT DO NOTHING
    RETURNING event_id
"""

# name: upsert_customers
# Each customer's latest profile and open cart. Every row given is cast (so facts PostgreSQL
# cannot store fail the batch, whichever activity carried them); the last one per key stays.
UPSERT_CUSTOMERS = """
    INSERT INTO scheduler.customers (customer_key, shop_id, partition, profile, cart, updated_at)
    SELECT DISTINCT ON (k) k, s, p, pr, c, $6
    FROM (
        SELECT k, s, p, pr::jsonb AS pr, c::jsonb AS c, n
        FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[])
            WITH ORDINALITY AS t(k, s, p, pr, c, n)
    ) AS given
    ORDER BY k, n DESC
    ON CONFLICT (customer_key) DO UPDATE SET
        profile = excluded.profile, cart = excluded.cart, partition = excluded.partition,
        updated_at = excluded.updated_at
"""

# name: new_enrollment_ids
# Ids for the enrolments a batch creates, taken before they are written (requests name them).
NEW_ENROLLMENT_IDS = """
    SELECT nextval(pg_get_serial_sequence('scheduler.enrollments', 'id'))
    FROM generate_series(1, $1)
"""

# name: insert_enrollments
INSERT_ENROLLMENTS = """
    INSERT INTO scheduler.enrollments (id, journey_id, journey_version, customer_key, partition,
        status, step_index, holdout, exit_reason, entered_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT i, j, v, k, p, s, x, h, r, en, $11
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[],
        $7::int[], $8::bool[], $9::text[], $10::timestamptz[])
        AS t(i, j, v, k, p, s, x, h, r, en)
"""

# name: update_enrollments
UPDATE_ENROLLMENTS = """
    UPDATE scheduler.enrollments e
    SET status = t.s, step_index = t.x, exit_reason = t.r, updated_at = $5
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[]) AS t(i, s, x, r)
    WHERE e.id = t.i
"""

# name: upsert_timers
# One pending timer per enrolment: scheduling again replaces it.
UPSERT_TIMERS = """
    INSERT INTO scheduler.timers (enrollment_id, partition, step_id, due_at)
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[])
    ON CONFLICT (enrollment_id) DO UPDATE SET
        step_id = excluded.step_id, due_at = excluded.due_at, partition = excluded.partition
"""

# name: cancel_timers
CANCEL_TIMERS = "DELETE FROM scheduler.timers WHERE enrollment_id = ANY($1::bigint[])"

# name: record_requests
# Message requests made; returns the keys not made before (a replay does not ask twice).
RECORD_REQUESTS = """
    INSERT INTO scheduler.message_requests (request_key, enrollment_id, step_id, variant,
        requested_at)
    SELECT k, i, s, v, $5
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS t(k, i, s, v)
    ON CONFLICT DO NOTHING
    RETURNING request_key
"""

# name: add_outbox
# Events to publish after the commit; ids in the order given, so they go out in that order.
ADD_OUTBOX = """
    INSERT INTO scheduler.outbox (topic, key, value, created_at)
    SELECT t, k, v, $4
    FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS u(t, k, v, n)
    ORDER BY n
    RETURNING id
"""

# name: take_outbox
# Rows published from memory after the commit: deleted (and locked) while they are sent, so
# the recovery relay never sends them too; if the send fails the deletion rolls back.
TAKE_OUTBOX = "DELETE FROM scheduler.outbox WHERE id = ANY($1::bigint[]) RETURNING id"

# name: fail_enrollment
# End an enrolment whose timer cannot be fired, saying why.
FAIL_ENROLLMENT = """
    UPDATE scheduler.enrollments SET status = 'failed', exit_reason = $2, updated_at = $3
    WHERE id = $1
"""

# name: reserve_enrolments
# `limits.max_enrolments`: take up to the wanted number of enrolments per journey under its
# cap, journey-wide (the row is locked until the transaction ends, so instances share it);
# returns how many were granted. A journey's first count starts from its stored enrolments.
RESERVE_ENROLMENTS = """
    WITH wanted AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(journey_id, n, cap)
    ), seeded AS (
        INSERT INTO scheduler.journey_enrolment_counts (journey_id, enrolled)
        SELECT w.journey_id, (SELECT count(*) FROM scheduler.enrollments e
                              WHERE e.journey_id = w.journey_id)
        FROM wanted w
        WHERE NOT EXISTS (SELECT 1 FROM scheduler.journey_enrolment_counts k
                          WHERE k.journey_id = w.journey_id)
        ON CONFLICT DO NOTHING
    )
    SELECT 1
"""
TAKE_ENROLMENTS = """
    WITH wanted AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(journey_id, n, cap)
    ), old AS (
        SELECT k.journey_id, k.enrolled FROM scheduler.journey_enrolment_counts k
        WHERE k.journey_id IN (SELECT journey_id FROM wanted)
        ORDER BY k.journey_id
        FOR UPDATE
    )
    UPDATE scheduler.journey_enrolment_counts k
    SET enrolled = GREATEST(old.enrolled, LEAST(w.cap, old.enrolled + w.n))
    FROM old, wanted w
    WHERE k.journey_id = old.journey_id AND w.journey_id = old.journey_id
    RETURNING k.journey_id, k.enrolled - old.enrolled
"""
