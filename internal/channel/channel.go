// Package channel defines the contract between diamondd and a payment channel
// (Alipay, WeChat Pay, the sandbox, the monthly credit line) and the
// normalized events every adapter turns its notifications into.
//
// Adapters live in subpackages and are written on the standard library. They
// never touch the database: the recharge and refund services record what an
// adapter reports, and they never call an adapter inside a transaction.
package channel

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
)

// Channel is the one producer-side interface of the project: every payment
// channel implements it, and the registry built in main holds them by name.
type Channel interface {
	// Name is the channel's identifier in URLs, configuration and the database
	// ("sandbox", "alipay", "wechatpay", "monthly_pay").
	Name() string

	// CreatePayment prepares what the client needs to pay the order (the
	// "pay" object of POST /v1/recharges). It may call the channel.
	CreatePayment(ctx context.Context, o Order) (Payment, error)

	// ParseWebhook verifies a notification on its raw body and headers
	// before parsing anything, and returns the normalized events it carries.
	// A bad or missing signature returns an error wrapping ErrBadSignature; a
	// verified but malformed body wraps ErrMalformed.
	ParseWebhook(ctx context.Context, header http.Header, body []byte) ([]Event, error)

	// WebhookResponse is the acknowledgement the channel expects: err is nil
	// when the notification was handled (or was a duplicate), and otherwise
	// the error that stopped it (the channel will redeliver).
	WebhookResponse(err error) Response

	// QueryPayment asks the channel for the state of our order. An order the
	// channel has never seen answers PaymentNotFound, not an error. An error
	// means the outcome is unknown (network, timeout): try again later.
	QueryPayment(ctx context.Context, orderID string) (PaymentStatus, error)

	// ClosePayment closes an unpaid order at the channel so it can no longer
	// be paid. It returns ErrAlreadyPaid when the channel reports the order
	// paid, refunded since or not: the caller must then apply the payment
	// (QueryPayment) instead.
	ClosePayment(ctx context.Context, orderID string) error

	// Refund submits a refund. RefundID is our refund id and is the channel's
	// idempotent refund number (out_request_no / out_refund_no), so resending
	// the same request never refunds twice. An error means the outcome is
	// unknown; a definite refusal is a RefundStatus with State RefundFailed.
	Refund(ctx context.Context, r RefundRequest) (RefundStatus, error)

	// QueryRefund asks the channel for the state of one of our refunds.
	QueryRefund(ctx context.Context, orderID, refundID string) (RefundStatus, error)
}

// EligibilityChecker is implemented by channels whose availability depends on
// the payer beyond the generic limits the recharge service applies (enabled,
// per-payment minimum and maximum, minors).
type EligibilityChecker interface {
	Eligibility(ctx context.Context, p Payer, amountFen int64) (Eligibility, error)
}

// Order is what an adapter needs to start a payment.
type Order struct {
	ID        string // our order id: the channel's out_trade_no
	UserID    string
	AmountFen int64
	Diamonds  int64
	Subject   string // human description shown by the channel
	ExpiresAt time.Time
}

// Payment is the result of CreatePayment.
type Payment struct {
	// Pay is returned to the client as the "pay" object.
	Pay map[string]any
	// Paid is true when the channel settled the payment synchronously (the
	// monthly credit line); TradeNo then names the channel's transaction.
	Paid    bool
	TradeNo string
}

// Payer is who pays, for eligibility rules.
type Payer struct {
	UserID string
	Minor  bool
}

// Eligibility says whether a channel can take a payment. ReasonCode is one of
// the codes of API.md when Available is false.
type Eligibility struct {
	Available  bool
	ReasonCode string
	Reason     string
}

// EventType is a normalized notification type.
type EventType string

const (
	EventPaymentSucceeded EventType = "payment.succeeded"
	EventPaymentFailed    EventType = "payment.failed"
	EventPaymentClosed    EventType = "payment.closed"
	EventRefundSucceeded  EventType = "refund.succeeded"
	EventRefundFailed     EventType = "refund.failed"
	// EventPaymentRefunded: the trade was paid and has since been refunded
	// at the channel, in part or in full. It may concern an order still
	// pending here (its payment notification lost, the money returned from
	// the merchant console), and such an order must not be credited.
	EventPaymentRefunded EventType = "payment.refunded"
)

// Event is one normalized notification. Key is unique per channel for one
// notification (notify_id, the WeChat notification id, the sandbox event_id)
// and is what redeliveries are recognised by.
type Event struct {
	Key       string
	Type      EventType
	OrderID   string // our order id (out_trade_no); empty on sandbox refund events
	TradeNo   string // the channel's transaction id
	RefundID  string // our refund id, on refund events
	AmountFen int64  // paid or refunded amount
	Reason    string // on failures
	At        time.Time
	// RefundedFen, on payment.refunded, is how much of the payment the
	// channel has returned so far, when it says (0: not reported).
	RefundedFen int64
}

// PaymentState is the channel's view of an order.
type PaymentState string

const (
	PaymentPending  PaymentState = "pending"   // created, not paid yet
	PaymentPaid     PaymentState = "paid"      // paid, with no refund the channel reports
	PaymentRefunded PaymentState = "refunded"  // paid, then refunded in part or in full at the channel
	PaymentClosed   PaymentState = "closed"    // closed or expired unpaid
	PaymentNotFound PaymentState = "not_found" // the channel has no such order
)

// PaymentStatus is the answer of QueryPayment.
type PaymentStatus struct {
	State     PaymentState
	TradeNo   string
	AmountFen int64
	PaidAt    time.Time
	// RefundedFen, with PaymentRefunded, is how much went back, when the
	// channel says (0: not reported).
	RefundedFen int64
}

// RefundRequest is one refund submission.
type RefundRequest struct {
	OrderID   string
	TradeNo   string
	RefundID  string
	AmountFen int64 // this refund
	TotalFen  int64 // the order's amount (WeChat Pay wants both)
	Reason    string
}

// RefundState is the channel's view of a refund.
type RefundState string

const (
	RefundProcessing RefundState = "processing"
	RefundSucceeded  RefundState = "succeeded"
	RefundFailed     RefundState = "failed"
	RefundNotFound   RefundState = "not_found"
)

// RefundStatus is the answer of Refund and QueryRefund.
type RefundStatus struct {
	State           RefundState
	ChannelRefundID string
	AmountFen       int64
	Reason          string
}

// Response is an HTTP acknowledgement in the channel's own format.
type Response struct {
	Status      int
	ContentType string // empty when Body is empty
	Body        []byte
	// Code and Detail, when Code is set, ask for a refusal in the API's
	// own problem format (API.md): the HTTP layer writes it, with the
	// request id; ContentType and Body are then unused.
	Code, Detail string
}

var (
	// ErrBadSignature: the notification failed verification (401, nothing recorded).
	ErrBadSignature = errors.New("channel: notification signature invalid")
	// ErrMalformed: verified, but the content cannot be understood.
	ErrMalformed = errors.New("channel: notification malformed")
	// ErrAlreadyPaid: ClosePayment found the order paid.
	ErrAlreadyPaid = errors.New("channel: order already paid")
	// ErrUnknownChannel: no channel of that name is configured.
	ErrUnknownChannel = errors.New("channel: unknown channel")
)

// Registry holds the configured channels, in configuration order.
type Registry struct {
	byName map[string]Channel
	names  []string
}

// NewRegistry builds a registry; names must be unique.
func NewRegistry(chs ...Channel) (*Registry, error) {
	r := &Registry{byName: make(map[string]Channel, len(chs))}
	for _, c := range chs {
		if _, dup := r.byName[c.Name()]; dup {
			return nil, errors.New("channel: duplicate channel " + c.Name())
		}
		r.byName[c.Name()] = c
		r.names = append(r.names, c.Name())
	}
	return r, nil
}

// Get returns the channel of that name, or ErrUnknownChannel.
func (r *Registry) Get(name string) (Channel, error) {
	c, ok := r.byName[name]
	if !ok {
		return nil, ErrUnknownChannel
	}
	return c, nil
}

// Names lists the channels in configuration order.
func (r *Registry) Names() []string { return append([]string(nil), r.names...) }

// Offline is implemented by channels whose CreatePayment makes no outside
// call (the sandbox; Alipay signs its order string locally): preparing a
// payment again for a retried request costs nothing and leaves nothing
// behind at the channel.
type Offline interface {
	PreparesOffline()
}

// InDatabase is implemented by a channel that settles in diamondd's own
// database (the monthly credit line). Its payments and refunds happen
// synchronously inside the caller's transaction, so the order, the credit
// line and the ledger move together; no outside call is involved.
type InDatabase interface {
	PayInTx(ctx context.Context, tx pgx.Tx, p Payer, o Order) (tradeNo string, err error)
	RefundInTx(ctx context.Context, tx pgx.Tx, userID string, r RefundRequest) error
}
