package load

import (
	"sort"
	"sync"
)

// Model is what the load tool knows it did, from the server's
// acknowledgements only: the orders it created and paid, the spends that
// were confirmed, the refunds that were accepted. From it the checker
// predicts every wallet of the run. It is safe for concurrent use.
type Model struct {
	mu      sync.Mutex
	users   map[string]*userModel
	orders  map[string]*Order
	refunds map[string]*Refund
	// unresolved counts operations whose outcome is still unknown (a request
	// that never got a definitive answer); the prediction is exact only when
	// it is zero.
	unresolved int
}

type userModel struct {
	spent    int64 // confirmed spends
	credited int64 // acknowledged payments' diamonds
	refunds  int64 // diamonds of accepted refunds (held or gone)
	reserved int64 // promised to operations in flight (spends, refunds about to be asked)
}

// Order is a recharge order the tool created. AmountFen and Diamonds are
// what the tool asked for and expects (the amount it asked, priced at the
// service's rate), never the service's reply: the channel is paid AmountFen
// and the checks expect Diamonds to be credited.
type Order struct {
	ID        string `json:"id"`
	UserID    string `json:"user_id"`
	AmountFen int64  `json:"amount_fen"`
	Diamonds  int64  `json:"diamonds"`
	// Reply is the price the service replied when it created the order
	// (nil when not recorded); "orders priced as asked" compares it.
	Reply *Price `json:"reply,omitempty"`
	// PaySent: at least one payment.succeeded notification went out, so the
	// channel took the money and the order must be credited.
	PaySent bool `json:"pay_sent"`
	// Acked: the service acknowledged a payment.succeeded notification.
	Acked bool `json:"acked"`
}

// Price is an amount and the diamonds it buys (or takes back).
type Price struct {
	AmountFen int64 `json:"amount_fen"`
	Diamonds  int64 `json:"diamonds"`
}

// Refund is a refund the service accepted. The tool only asks for full
// refunds of orders whose diamonds are unspent (reserved for it), so a
// refund must give back the order's AmountFen and take back exactly the
// order's Diamonds; AmountFen and Diamonds here are what the service
// replied, and the checks judge them against the order.
type Refund struct {
	ID        string `json:"id"`
	OrderID   string `json:"order_id"`
	UserID    string `json:"user_id"`
	AmountFen int64  `json:"amount_fen"`
	Diamonds  int64  `json:"diamonds"`
	// RefundSent: the channel sent refund.succeeded, so the money went back
	// to the user and the refund must end succeeded.
	RefundSent bool `json:"refund_sent"`
	// WebhookAcked: the channel's refund.succeeded was acknowledged.
	WebhookAcked bool `json:"webhook_acked"`
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{users: map[string]*userModel{}, orders: map[string]*Order{}, refunds: map[string]*Refund{}}
}

func (m *Model) user(id string) *userModel {
	u := m.users[id]
	if u == nil {
		u = &userModel{}
		m.users[id] = u
	}
	return u
}

// Touch registers a user the run may have changed.
func (m *Model) Touch(user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.user(user)
}

// OrderCreated records a created order.
func (m *Model) OrderCreated(o Order) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.user(o.UserID)
	if _, ok := m.orders[o.ID]; !ok {
		m.orders[o.ID] = &o
	}
}

// PaymentSent records that the channel took the money for an order.
func (m *Model) PaymentSent(orderID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o := m.orders[orderID]; o != nil {
		o.PaySent = true
	}
}

// PaymentAcked records an acknowledged payment; reserve promises the
// diamonds to an operation that follows (a refund) so no spend takes them.
// It reports whether this was the first acknowledgement.
func (m *Model) PaymentAcked(orderID string, reserve bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.orders[orderID]
	if o == nil || o.Acked {
		return false
	}
	o.PaySent, o.Acked = true, true
	u := m.user(o.UserID)
	u.credited += o.Diamonds
	if reserve {
		u.reserved += o.Diamonds
	}
	return true
}

// Spendable is what a new spend may take without any risk of running short.
func (m *Model) Spendable(user string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.user(user)
	return u.credited - u.spent - u.refunds - u.reserved
}

// Reserve promises up to n spendable diamonds to an operation in flight and
// returns how many it got.
func (m *Model) Reserve(user string, n int64) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.user(user)
	n = min(n, u.credited-u.spent-u.refunds-u.reserved)
	if n <= 0 {
		return 0
	}
	u.reserved += n
	return n
}

// Release gives back a reservation.
func (m *Model) Release(user string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.user(user).reserved -= n
}

// Spent records a confirmed spend that held a reservation of n.
func (m *Model) Spent(user string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.user(user)
	u.reserved -= n
	u.spent += n
}

// RefundAccepted records a refund the service accepted (its diamonds left
// available: the order's, whatever the reply says); reserved is the
// reservation it consumes.
func (m *Model) RefundAccepted(r Refund, reserved int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.user(r.UserID)
	u.reserved -= reserved
	if _, ok := m.refunds[r.ID]; ok {
		return
	}
	take := r.Diamonds
	if o := m.orders[r.OrderID]; o != nil {
		take = o.Diamonds
	}
	u.refunds += take
	m.refunds[r.ID] = &r
}

// RefundSent records that the channel sent refund.succeeded: it paid the
// money back.
func (m *Model) RefundSent(refundID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.refunds[refundID]; r != nil {
		r.RefundSent = true
	}
}

// RefundWebhookAcked records the acknowledgement of a refund.succeeded.
func (m *Model) RefundWebhookAcked(refundID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.refunds[refundID]; r != nil {
		r.RefundSent, r.WebhookAcked = true, true
	}
}

// Unresolved adjusts the count of operations with an unknown outcome.
func (m *Model) Unresolved(delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unresolved += delta
}

// Expectation is a frozen copy of the model for the checker.
type Expectation struct {
	Users      []string          `json:"users"`
	Spent      map[string]int64  `json:"spent"`
	Orders     map[string]Order  `json:"orders"`
	Refunds    map[string]Refund `json:"refunds"`
	Unresolved int               `json:"unresolved"`
}

// Expect freezes the model.
func (m *Model) Expect() Expectation {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := Expectation{Spent: map[string]int64{}, Orders: map[string]Order{}, Refunds: map[string]Refund{},
		Unresolved: m.unresolved}
	for id, u := range m.users {
		e.Users = append(e.Users, id)
		if u.spent != 0 {
			e.Spent[id] = u.spent
		}
	}
	sort.Strings(e.Users)
	for id, o := range m.orders {
		e.Orders[id] = *o
	}
	for id, r := range m.refunds {
		e.Refunds[id] = *r
	}
	return e
}

// Counts summarises the model for the report.
func (m *Model) Counts() (users, orders, paid, refunds int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.orders {
		if o.Acked {
			paid++
		}
	}
	return len(m.users), len(m.orders), paid, len(m.refunds)
}
