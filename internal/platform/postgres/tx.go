package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tx is the transaction WithTx hands out. It costs no round trip of its own
// where it can help it: BEGIN travels with the first batch, row query or
// statement with arguments sent in it, and COMMIT can travel with the last batch (QueueCommit). A
// transaction of three batches thus takes three round trips, not five; on the
// hot paths round trips are most of the cost of a request, on both sides of
// the connection. (pgx's Batch.BeginTx does the same for a batch known when
// the transaction starts; here the first batch is whichever code sends
// first.)
type Tx struct {
	conn   *pgxpool.Conn
	begun  bool // BEGIN has been sent
	closed bool // a queued COMMIT has run: nothing more may be sent
}

var _ pgx.Tx = (*Tx)(nil)

var errSavepoint = errors.New("postgres: savepoints are not used in this service")

// start sends BEGIN on its own, for a statement that cannot carry it.
func (t *Tx) start(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	if t.begun {
		return nil
	}
	if _, err := t.conn.Exec(ctx, "begin"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t.begun = true
	return nil
}

// SendBatch sends b, with BEGIN in front of it when it is the transaction's
// first round trip.
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.closed {
		return failedBatch{pgx.ErrTxClosed}
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
	if t.closed {
		return failedRow{pgx.ErrTxClosed}
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
	if t.closed || t.begun || len(args) == 0 {
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
	return t.conn.Conn().Prepare(ctx, name, sql)
}

// Begin would start a savepoint; nothing here needs one.
func (t *Tx) Begin(context.Context) (pgx.Tx, error) { return nil, errSavepoint }

// LargeObjects are not used in this service.
func (t *Tx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

func (t *Tx) Conn() *pgx.Conn { return t.conn.Conn() }

// Commit commits, unless a queued COMMIT already did or nothing was sent.
func (t *Tx) Commit(ctx context.Context) error {
	if t.closed || !t.begun {
		t.closed = true
		return nil
	}
	t.closed = true
	tag, err := t.conn.Exec(ctx, "commit")
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if tag.String() != "COMMIT" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls back what is open; after a commit it does nothing.
func (t *Tx) Rollback(ctx context.Context) error {
	if t.closed || !t.begun {
		t.closed = true
		return nil
	}
	t.closed = true
	if _, err := t.conn.Exec(ctx, "rollback"); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// QueueCommit ends b with the transaction's COMMIT, so that it commits in
// b's round trip. b must be the last thing sent in tx: anything sent after
// the commit fails with pgx.ErrTxClosed, and the caller must not look at
// b's results to decide on more writes. A statement of b that fails skips
// the COMMIT, and the transaction rolls back as usual. For a transaction
// that is not a Tx this does nothing: it commits as usual.
func QueueCommit(tx pgx.Tx, b *pgx.Batch) {
	t, ok := tx.(*Tx)
	if !ok {
		return
	}
	b.Queue("commit").Exec(func(tag pgconn.CommandTag) error {
		t.closed = true
		if tag.String() != "COMMIT" {
			return pgx.ErrTxCommitRollback
		}
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
