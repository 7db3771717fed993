-- +goose Up
-- Recharge orders, the channel payments against them, webhook events,
-- refunds, credit lines, timelines and the support audit log. Per-user
-- tables lead their keys with user_id (see 0001).

-- Webhooks and support name objects by id alone; owners maps an order or
-- refund id to its user so every other read can use the user's keys.
CREATE TABLE owners (
    object_id uuid PRIMARY KEY,
    user_id   text NOT NULL
);

CREATE TABLE orders (
    user_id      text        NOT NULL,
    id           uuid        NOT NULL,
    channel      text        NOT NULL,
    package_id   text,
    amount_fen   bigint      NOT NULL CONSTRAINT orders_amount_positive CHECK (amount_fen > 0),
    diamonds     bigint      NOT NULL CONSTRAINT orders_diamonds_positive CHECK (diamonds > 0),
    status       text        NOT NULL CONSTRAINT orders_status_known
                             CHECK (status IN ('pending', 'paid', 'closed', 'failed', 'partially_refunded', 'refunded')),
    minor        boolean     NOT NULL DEFAULT false,
    pay          jsonb       NOT NULL DEFAULT '{}',
    trade_no     text,                        -- the channel trade that paid it
    flags        text[]      NOT NULL DEFAULT '{}', -- amount_mismatch, late_payment, duplicate_payment
    risk         jsonb,                       -- the accidental-recharge assessment, when paid
    risk_score   int         NOT NULL DEFAULT 0,
    expires_at   timestamptz NOT NULL,
    check_after  timestamptz,                 -- when the pending-order worker looks at it next
    created_at   timestamptz NOT NULL,
    paid_at      timestamptz,
    closed_at    timestamptz,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX orders_pending ON orders (check_after) WHERE status = 'pending';
-- the risk rules read a user's recent paid recharges
CREATE INDEX orders_user_paid ON orders (user_id, paid_at DESC) WHERE paid_at IS NOT NULL;
CREATE INDEX orders_flagged ON orders (paid_at DESC) WHERE risk_score > 0;

-- One row per channel trade reported paid: the natural key makes a second
-- report of the same trade a no-op.
CREATE TABLE payments (
    user_id     text        NOT NULL,
    channel     text        NOT NULL,
    trade_no    text        NOT NULL,
    order_id    uuid        NOT NULL,
    amount_fen  bigint      NOT NULL,
    outcome     text        NOT NULL CONSTRAINT payments_outcome_known
                            CHECK (outcome IN ('credited', 'amount_mismatch', 'duplicate')),
    refund_id   uuid,                          -- the automatic refund of a duplicate payment
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, channel, trade_no)
);

-- Every verified notification, recorded before it is acted on, in the same
-- transaction as its effect: a redelivery finds it and changes nothing.
CREATE TABLE webhook_events (
    channel     text        NOT NULL,
    event_key   text        NOT NULL,
    type        text        NOT NULL,
    object_id   text        NOT NULL,
    user_id     text,
    outcome     text        NOT NULL,
    payload     jsonb       NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (channel, event_key)
);

-- The transitions of orders and refunds.
CREATE TABLE timeline (
    user_id   text        NOT NULL,
    object_id uuid        NOT NULL,
    id        uuid        NOT NULL,
    status    text        NOT NULL,
    actor     text        NOT NULL,
    note      text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL,
    PRIMARY KEY (user_id, object_id, id)
);

-- The monthly-pay credit line. used_fen never exceeds limit_fen when a
-- payment is taken (checked by the conditional update that takes it).
CREATE TABLE credit_lines (
    user_id    text        PRIMARY KEY,
    limit_fen  bigint      NOT NULL CONSTRAINT credit_lines_limit_nonnegative CHECK (limit_fen >= 0),
    used_fen   bigint      NOT NULL DEFAULT 0 CONSTRAINT credit_lines_used_nonnegative CHECK (used_fen >= 0),
    status     text        NOT NULL CONSTRAINT credit_lines_status_known CHECK (status IN ('active', 'frozen', 'overdue')),
    updated_at timestamptz NOT NULL
);

CREATE TABLE refunds (
    user_id         text        NOT NULL,
    id              uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    channel         text        NOT NULL,
    trade_no        text        NOT NULL,   -- the payment refunded
    kind            text        NOT NULL CONSTRAINT refunds_kind_known CHECK (kind IN ('user', 'agent', 'duplicate_payment')),
    status          text        NOT NULL CONSTRAINT refunds_status_known
                                CHECK (status IN ('pending_review', 'approved', 'processing', 'succeeded', 'failed', 'rejected', 'cancelled')),
    amount_fen      bigint      NOT NULL CONSTRAINT refunds_amount_positive CHECK (amount_fen > 0),
    diamonds        bigint      NOT NULL CONSTRAINT refunds_diamonds_nonnegative CHECK (diamonds >= 0), -- clawed back in all
    held            bigint      NOT NULL DEFAULT 0,   -- of which on hold (the rest is the shortfall)
    clawback        text        NOT NULL CONSTRAINT refunds_clawback_known CHECK (clawback IN ('unspent_only', 'allow_debt', 'write_off', 'none')),
    reason_code     text        NOT NULL,
    description     text        NOT NULL DEFAULT '',
    evidence        jsonb       NOT NULL DEFAULT '[]',
    resubmissions   int         NOT NULL DEFAULT 0,
    priority        int         NOT NULL DEFAULT 0,   -- higher first in the review queue
    created_by      text        NOT NULL,
    created_by_role text        NOT NULL,
    decided_by      text,
    auto_approved   boolean     NOT NULL DEFAULT false,
    sla_deadline    timestamptz,
    channel_refund_id text,
    failure_reason  text,
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,                      -- when the refund worker submits or polls it
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX refunds_order ON refunds (user_id, order_id);
CREATE INDEX refunds_review ON refunds (priority DESC, sla_deadline) WHERE status = 'pending_review';
CREATE INDEX refunds_work ON refunds (next_attempt_at) WHERE status IN ('approved', 'processing');

-- Every support action. Append-only.
CREATE TABLE audit_log (
    id          uuid        PRIMARY KEY,
    actor       text        NOT NULL,
    actor_role  text        NOT NULL,
    action      text        NOT NULL,
    object_type text        NOT NULL,
    object_id   text        NOT NULL,
    user_id     text        NOT NULL,
    before      text,
    after       text,
    note        text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL
);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
