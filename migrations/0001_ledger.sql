-- +goose Up
-- The diamond ledger. Every money movement concerns exactly one user, so every
-- table carries user_id first in its keys: the schema can be distributed by
-- user_id (Citus) with each transaction on one shard.

-- wallets is the balance projection of the user's three accounts, updated in
-- the same transaction as the postings. debt is stored positive (what the
-- user owes); in postings the debt account goes negative as debt grows.
CREATE TABLE wallets (
    user_id    text        PRIMARY KEY,
    available  bigint      NOT NULL DEFAULT 0 CONSTRAINT wallets_available_nonnegative CHECK (available >= 0),
    held       bigint      NOT NULL DEFAULT 0 CONSTRAINT wallets_held_nonnegative CHECK (held >= 0),
    debt       bigint      NOT NULL DEFAULT 0 CONSTRAINT wallets_debt_nonnegative CHECK (debt >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A journal is one balanced movement. reference is unique so that the
-- database itself refuses to apply the same movement twice.
CREATE TABLE journals (
    user_id    text        NOT NULL,
    id         uuid        NOT NULL,
    kind       text        NOT NULL,
    reference  text        NOT NULL,
    memo       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id),
    CONSTRAINT journals_reference_key UNIQUE (user_id, reference)
);

-- account is the user's own 'available', 'held' or 'debt', or a system
-- account: 'issuance:<channel>', 'spent', 'refunded', 'writeoff'. System
-- accounts have no balance row (it would be one hot row for every user):
-- their balances are sums over postings.
CREATE TABLE postings (
    user_id    text     NOT NULL,
    journal_id uuid     NOT NULL,
    line       smallint NOT NULL,
    account    text     NOT NULL,
    amount     bigint   NOT NULL CONSTRAINT postings_amount_nonzero CHECK (amount <> 0),
    PRIMARY KEY (user_id, journal_id, line),
    FOREIGN KEY (user_id, journal_id) REFERENCES journals (user_id, id)
);

-- +goose StatementBegin
CREATE FUNCTION ledger_check_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    lines int;
BEGIN
    SELECT coalesce(sum(amount), 0), count(*) INTO total, lines
      FROM postings WHERE user_id = NEW.user_id AND journal_id = NEW.id;
    IF lines < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'journal % is unbalanced: % postings summing to %', NEW.id, lines, total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journals_balanced';
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- Checked at commit, when all of the journal's postings are in.
CREATE CONSTRAINT TRIGGER journals_balanced AFTER INSERT ON journals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_journal();

-- +goose StatementBegin
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: corrections are new journals', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
-- +goose StatementEnd

CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON journals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Idempotency-Key records: the stored outcome of a request, written in the
-- same transaction as its effect.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    method       text        NOT NULL,
    route        text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       int         NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, method, route, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- Spends by services (gifts). service is the calling principal.
CREATE TABLE spends (
    user_id     text        NOT NULL,
    id          uuid        NOT NULL,
    service     text        NOT NULL,
    reference   text        NOT NULL,
    diamonds    bigint      NOT NULL CONSTRAINT spends_diamonds_positive CHECK (diamonds > 0),
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);
