package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tx is the transaction WithTx hands out. It costs no round trip of its own
// where it can help it: BEGIN travels with the first batch, row query or
// statement with arguments sent in it, and COMMIT can travel with the last
// batch (QueueCommit). A transaction of three batches thus takes three round
// trips, not five; on the hot paths round trips are most of the cost of a
// request, on both sides of the connection. (pgx's Batch.BeginTx does the
// same for a batch known when the transaction starts; here the first batch
// is whichever code sends first.)
//
// Whether a transaction is open is read off the connection (the status of
// the server's last ReadyForQuery), never assumed: a first round trip that
// failed before its BEGIN ran leaves none, and then nothing more is sent, so
// no statement can ever run on its own outside the transaction.
type Tx struct {
	conn     *pgxpool.Conn
	begun    bool             // BEGIN has been sent
	commit   *pgx.QueuedQuery // the COMMIT queued by QueueCommit
	ended    bool             // COMMIT or ROLLBACK has been sent: nothing more may be
	commitOK bool             // and the server answered COMMIT
}

var _ pgx.Tx = (*Tx)(nil)

var (
	errSavepoint = errors.New("postgres: savepoints are not used in this service")
	errNoTx      = errors.New("postgres: the transaction did not start")
)

// status is the server's transaction status: 'I' idle (no transaction),
// 'T' in a transaction, 'E' in a failed one.
func (t *Tx) status() byte { return t.conn.Conn().PgConn().TxStatus() }

// usable refuses a statement after COMMIT, or when BEGIN was sent but no
// transaction is open (the statement would commit on its own).
func (t *Tx) usable() error {
	switch {
	case t.ended:
		return pgx.ErrTxClosed
	case t.begun && t.status() == 'I':
		return errNoTx
	}
	return nil
}

// start sends BEGIN on its own, for a statement that cannot carry it.
func (t *Tx) start(ctx context.Context) error {
	if err := t.usable(); err != nil {
		return err
	}
	if t.begun {
		return nil
	}
	t.begun = true
	if _, err := t.conn.Exec(ctx, "begin"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	return nil
}

// SendBatch sends b, with BEGIN in front of it when it is the transaction's
// first round trip.
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.usable(); err != nil {
		return failedBatch{err}
	}
	if t.commit != nil && slices.Contains(b.QueuedQueries, t.commit) {
		t.ended = true
	}
	if t.begun {
		return t.conn.SendBatch(ctx, b)
	}
	t.begun = true
	withBegin := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(b.QueuedQueries)+1)}
	withBegin.Queue("begin")
	withBegin.QueuedQueries = append(withBegin.QueuedQueries, b.QueuedQueries...)
	br := t.conn.SendBatch(ctx, withBegin)
	if _, err := br.Exec(); err != nil { // BEGIN's own result, or what stopped the batch
		_ = br.Close()
		return failedBatch{err}
	}
	return br
}

// QueryRow sends the query, with BEGIN in front of it when it is the first.
func (t *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.usable(); err != nil {
		return failedRow{err}
	}
	if t.begun {
		return t.conn.QueryRow(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br := t.SendBatch(ctx, b)
	return batchRow{row: br.QueryRow(), br: br}
}

// Exec runs a statement, with BEGIN in front of it when it is the first.
// Without arguments pgx sends it with the simple protocol, which may hold
// several statements and cannot go in a batch: BEGIN then goes on its own.
func (t *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.begun || len(args) == 0 {
		if err := t.start(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.conn.Exec(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br := t.SendBatch(ctx, b)
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return tag, err
}

// Query runs a query; BEGIN goes first on its own if nothing was sent yet.
func (t *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.start(ctx); err != nil {
		return nil, err
	}
	return t.conn.Query(ctx, sql, args...)
}

func (t *Tx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.start(ctx); err != nil {
		return 0, err
	}
	return t.conn.CopyFrom(ctx, table, columns, src)
}

func (t *Tx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	return t.conn.Conn().Prepare(ctx, name, sql)
}

// Begin would start a savepoint; nothing here needs one.
func (t *Tx) Begin(context.Context) (pgx.Tx, error) { return nil, errSavepoint }

// LargeObjects are not used in this service.
func (t *Tx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

// Conn is the connection itself: what is sent on it directly escapes the
// transaction's bookkeeping. Nothing here uses it.
func (t *Tx) Conn() *pgx.Conn { return t.conn.Conn() }

// Commit commits, unless nothing was sent or a queued COMMIT was sent; then
// it reports what that COMMIT did.
func (t *Tx) Commit(ctx context.Context) error {
	switch {
	case !t.begun:
		return nil
	case t.ended && t.commitOK:
		return nil
	case t.ended:
		// The batch failed before its COMMIT (or the COMMIT failed): the
		// caller should have stopped there.
		_ = t.Rollback(ctx)
		return pgx.ErrTxCommitRollback
	case t.status() == 'I':
		return errNoTx
	}
	t.ended = true
	tag, err := t.conn.Exec(ctx, "commit")
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if tag.String() != "COMMIT" {
		return pgx.ErrTxCommitRollback
	}
	t.commitOK = true
	return nil
}

// Rollback rolls back whatever transaction is open on the connection.
func (t *Tx) Rollback(ctx context.Context) error {
	if !t.begun || t.status() == 'I' {
		return nil
	}
	t.ended = true // nothing more may be sent
	if _, err := t.conn.Exec(ctx, "rollback"); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// QueueCommit ends b with the transaction's COMMIT, so that it commits in
// b's round trip; anything sent in tx after b fails with pgx.ErrTxClosed.
// The server commits when it reaches the COMMIT, before the caller reads a
// single result: only a statement that fails in the database stops it (and
// then the transaction rolls back as usual). An error the caller finds in
// b's results (a callback that refuses, a scan that fails) comes too late
// to undo anything, so b may hold only statements whose results the caller
// does not judge. For a transaction that is not a Tx this does nothing: it
// commits as usual.
func QueueCommit(tx pgx.Tx, b *pgx.Batch) {
	t, ok := tx.(*Tx)
	if !ok {
		return
	}
	t.commit = b.Queue("commit")
	t.commit.Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return pgx.ErrTxCommitRollback
		}
		t.commitOK = true
		return nil
	})
}

// failedBatch answers every call with the error that stopped the batch.
type failedBatch struct{ err error }

func (f failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, f.err }
func (f failedBatch) Query() (pgx.Rows, error)         { return nil, f.err }
func (f failedBatch) QueryRow() pgx.Row                { return failedRow(f) }
func (f failedBatch) Close() error                     { return f.err }
func (f failedBatch) Tx() pgx.Tx                       { return nil }

type failedRow struct{ err error }

func (f failedRow) Scan(...any) error { return f.err }

// batchRow is a row query sent as a batch with BEGIN: scanning it also reads
// the end of the batch, freeing the connection.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}
