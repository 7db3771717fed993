// Package loadfake is an in-memory stand-in for diamondd that follows the
// parts of API.md the load tool speaks (recharges, the sandbox webhook,
// refunds and their approval, spends, wallets), so the tool's flows, its
// redelivery and its checks can be tested without the real service. Bugs
// can be planted in it to prove that the checks catch them.
package loadfake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/load"
)

// Bugs to plant.
type Bugs struct {
	// CreditPerEvent credits a payment once per distinct event id instead
	// of once per order (a double credit under redelivery storms).
	CreditPerEvent bool
	// LoseEvery acknowledges every n-th payment without crediting it.
	LoseEvery int
	// FailEvery answers 500 to every n-th webhook before doing anything
	// (the channel must redeliver it).
	FailEvery int
	// RefundHookFails answers 500 to every refund.succeeded and, like an
	// expiring refund worker, marks the refund failed and gives the held
	// diamonds back: the channel paid the money out, the user keeps them.
	RefundHookFails bool
	// RefundHookIgnored answers 500 to every refund.succeeded and does
	// nothing else: the refund stays processing.
	RefundHookIgnored bool
	// RefundHalfDiamonds takes back only half of the order's diamonds on a
	// full refund (the whole amount_fen is still refunded).
	RefundHalfDiamonds bool
	// DoublePricing prices orders at 2 diamonds per 10 fen (the service's
	// rate is 1 per 10 fen).
	DoublePricing bool
	// DuplicateRefund treats a payment.succeeded of an already paid order
	// under another event id as a second payment and returns it through a
	// duplicate_payment refund (money goes back out; nothing clawed back).
	DuplicateRefund bool
}

// Service is the fake.
type Service struct {
	JWTSecret, WebhookSecret string
	Bugs                     Bugs

	verifier *auth.Verifier
	seq      atomic.Int64
	hooks    atomic.Int64
	payments atomic.Int64

	mu      sync.Mutex
	keys    map[string][]byte // idempotency: principal+route+key → response body
	orders  map[string]*order
	refunds map[string]*refund
	events  map[string]bool
	wallets map[string]*load.Wallet
	credits []load.Credit
}

type order struct {
	ID, UserID, Status string
	AmountFen, Diamond int64
}

type refund struct {
	ID, OrderID, UserID, Kind, Status string
	AmountFen, Diamonds               int64
}

// New builds the fake.
func New(jwtSecret, webhookSecret string) *Service {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(jwtSecret)})
	if err != nil {
		panic(err)
	}
	return &Service{JWTSecret: jwtSecret, WebhookSecret: webhookSecret, verifier: v,
		keys: map[string][]byte{}, orders: map[string]*order{}, refunds: map[string]*refund{},
		events: map[string]bool{}, wallets: map[string]*load.Wallet{}}
}

// Credits are the fake's journals on the issuance account.
func (s *Service) Credits() []load.Credit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]load.Credit{}, s.credits...)
}

// Refunds are the fake's refunds, as the checker reads them from the
// database.
func (s *Service) Refunds() []load.RefundRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []load.RefundRow{}
	for _, rf := range s.refunds {
		out = append(out, load.RefundRow{ID: rf.ID, UserID: rf.UserID, OrderID: rf.OrderID, Kind: rf.Kind,
			Status: rf.Status, AmountFen: rf.AmountFen, Diamonds: rf.Diamonds})
	}
	return out
}

// PlantCredit adds a credit out of nowhere (a test's planted double credit).
func (s *Service) PlantCredit(user, reference string, diamonds int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.credits = append(s.credits, load.Credit{UserID: user, Reference: reference, Diamonds: diamonds})
	s.wallet(user).Available += diamonds
}

func (s *Service) wallet(u string) *load.Wallet {
	w := s.wallets[u]
	if w == nil {
		w = &load.Wallet{}
		s.wallets[u] = w
	}
	return w
}

func (s *Service) id(prefix string) string { return fmt.Sprintf("%s%08d", prefix, s.seq.Add(1)) }

func problem(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "title": http.StatusText(status)})
}

func reply(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ServeHTTP routes the few endpoints the load tool uses.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	path := r.URL.Path
	if r.Method == "GET" && path == "/metrics" {
		fmt.Fprintln(w, "process_resident_memory_bytes 1.2345678e+07")
		return
	}
	if r.Method == "POST" && path == "/v1/webhooks/sandbox" {
		s.webhook(w, r, body)
		return
	}
	p, err := s.verifier.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		problem(w, 401, "unauthenticated")
		return
	}
	switch {
	case r.Method == "POST" && path == "/v1/recharges" && p.Role == auth.RoleUser:
		s.idempotent(w, r, p, func() (int, []byte) { return s.createOrder(p.Subject, body) })
	case r.Method == "POST" && path == "/v1/refunds" && p.Role == auth.RoleUser:
		s.idempotent(w, r, p, func() (int, []byte) { return s.createRefund(p.Subject, body) })
	case r.Method == "POST" && path == "/v1/spends" && p.Role == auth.RoleService:
		s.idempotent(w, r, p, func() (int, []byte) { return s.spend(body) })
	case r.Method == "GET" && path == "/v1/wallet" && p.Role == auth.RoleUser:
		s.getWallet(w, p.Subject)
	case r.Method == "GET" && strings.HasPrefix(path, "/v1/admin/users/") && strings.HasSuffix(path, "/wallet") && p.Role.IsSupport():
		s.getWallet(w, strings.TrimSuffix(strings.TrimPrefix(path, "/v1/admin/users/"), "/wallet"))
	case r.Method == "GET" && strings.HasPrefix(path, "/v1/admin/refunds/") && p.Role.IsSupport():
		s.getRefund(w, strings.TrimPrefix(path, "/v1/admin/refunds/"))
	case r.Method == "POST" && strings.HasPrefix(path, "/v1/admin/refunds/") && strings.HasSuffix(path, "/approve") && p.Role.IsSupport():
		s.approve(w, strings.TrimSuffix(strings.TrimPrefix(path, "/v1/admin/refunds/"), "/approve"))
	default:
		problem(w, 404, "not_found")
	}
}

func (s *Service) idempotent(w http.ResponseWriter, r *http.Request, p auth.Principal, run func() (int, []byte)) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		problem(w, 400, "idempotency_key_required")
		return
	}
	k := p.Subject + " " + r.URL.Path + " " + key
	s.mu.Lock()
	if b, ok := s.keys[k]; ok {
		s.mu.Unlock()
		w.Header().Set("Idempotent-Replayed", "true")
		var st struct {
			Status int             `json:"s"`
			Body   json.RawMessage `json:"b"`
		}
		_ = json.Unmarshal(b, &st)
		reply(w, st.Status, st.Body)
		return
	}
	s.mu.Unlock()
	status, out := run()
	s.mu.Lock()
	s.keys[k], _ = json.Marshal(map[string]any{"s": status, "b": json.RawMessage(out)})
	s.mu.Unlock()
	reply(w, status, out)
}

func (s *Service) createOrder(user string, body []byte) (int, []byte) {
	var req struct {
		Channel   string `json:"channel"`
		AmountFen int64  `json:"amount_fen"`
	}
	if json.Unmarshal(body, &req) != nil || req.Channel != "sandbox" || req.AmountFen < 100 || req.AmountFen%10 != 0 {
		b, _ := json.Marshal(map[string]any{"status": 400, "code": "validation_failed"})
		return 400, b
	}
	o := &order{ID: s.id("o"), UserID: user, Status: "pending", AmountFen: req.AmountFen, Diamond: req.AmountFen / 10}
	if s.Bugs.DoublePricing {
		o.Diamond = req.AmountFen / 5
	}
	s.mu.Lock()
	s.orders[o.ID] = o
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"id": o.ID, "status": o.Status, "channel": "sandbox", "amount_fen": o.AmountFen,
		"diamonds": o.Diamond, "expires_at": time.Now().Add(15 * time.Minute).UTC(), "pay": map[string]any{}})
	return 201, b
}

func (s *Service) webhook(w http.ResponseWriter, r *http.Request, body []byte) {
	mac := hmac.New(sha256.New, []byte(s.WebhookSecret))
	mac.Write([]byte(r.Header.Get("X-Sandbox-Timestamp") + "."))
	mac.Write(body)
	if !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(r.Header.Get("X-Sandbox-Signature"))) {
		problem(w, 401, "invalid_signature")
		return
	}
	if n := s.hooks.Add(1); s.Bugs.FailEvery > 0 && n%int64(s.Bugs.FailEvery) == 0 {
		problem(w, 500, "internal_error")
		return
	}
	var ev struct {
		EventID   string `json:"event_id"`
		Type      string `json:"type"`
		OrderID   string `json:"order_id"`
		RefundID  string `json:"refund_id"`
		AmountFen int64  `json:"amount_fen"`
	}
	if json.Unmarshal(body, &ev) != nil || ev.EventID == "" {
		problem(w, 400, "validation_failed")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events[ev.EventID] {
		reply(w, 200, []byte(`{"ok":true}`))
		return
	}
	s.events[ev.EventID] = true
	switch ev.Type {
	case "payment.succeeded":
		o := s.orders[ev.OrderID]
		if o == nil || ev.AmountFen != o.AmountFen {
			break
		}
		if o.Status == "paid" && s.Bugs.DuplicateRefund {
			rf := &refund{ID: s.id("r"), OrderID: o.ID, UserID: o.UserID, Kind: "duplicate_payment", Status: "processing", AmountFen: o.AmountFen}
			s.refunds[rf.ID] = rf
			break
		}
		if o.Status == "paid" && !s.Bugs.CreditPerEvent {
			break
		}
		o.Status = "paid"
		if n := s.payments.Add(1); s.Bugs.LoseEvery > 0 && n%int64(s.Bugs.LoseEvery) == 0 {
			break
		}
		s.credits = append(s.credits, load.Credit{UserID: o.UserID, Reference: "recharge:" + o.ID, Diamonds: o.Diamond})
		s.wallet(o.UserID).Available += o.Diamond
	case "refund.succeeded":
		rf := s.refunds[ev.RefundID]
		if (s.Bugs.RefundHookFails || s.Bugs.RefundHookIgnored) && rf != nil {
			if rf.Status == "processing" && s.Bugs.RefundHookFails {
				rf.Status = "failed"
				s.wallet(rf.UserID).Held -= rf.Diamonds
				s.wallet(rf.UserID).Available += rf.Diamonds
			}
			delete(s.events, ev.EventID) // not recorded: the request failed
			problem(w, 500, "internal_error")
			return
		}
		if rf == nil || rf.Status != "processing" {
			break
		}
		rf.Status = "succeeded"
		s.wallet(rf.UserID).Held -= rf.Diamonds
	}
	reply(w, 200, []byte(`{"ok":true}`))
}

func (s *Service) createRefund(user string, body []byte) (int, []byte) {
	var req struct {
		OrderID string `json:"order_id"`
	}
	_ = json.Unmarshal(body, &req)
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orders[req.OrderID]
	if o == nil || o.UserID != user {
		return 404, []byte(`{"status":404,"code":"not_found"}`)
	}
	if o.Status != "paid" {
		return 409, []byte(`{"status":409,"code":"refund_exceeds_order"}`)
	}
	wal := s.wallet(user)
	if wal.Available < o.Diamond {
		return 409, []byte(`{"status":409,"code":"diamonds_already_spent"}`)
	}
	take := o.Diamond
	if s.Bugs.RefundHalfDiamonds {
		take = o.Diamond / 2
	}
	wal.Available -= take
	wal.Held += take
	o.Status = "refunded"
	rf := &refund{ID: s.id("r"), OrderID: o.ID, UserID: user, Kind: "user", Status: "pending_review", AmountFen: o.AmountFen, Diamonds: take}
	s.refunds[rf.ID] = rf
	b, _ := json.Marshal(s.refundJSON(rf))
	return 201, b
}

func (s *Service) refundJSON(rf *refund) map[string]any {
	return map[string]any{"id": rf.ID, "order_id": rf.OrderID, "status": rf.Status, "amount_fen": rf.AmountFen, "diamonds": rf.Diamonds}
}

func (s *Service) approve(w http.ResponseWriter, id string) {
	s.mu.Lock()
	rf := s.refunds[id]
	if rf == nil {
		s.mu.Unlock()
		problem(w, 404, "not_found")
		return
	}
	if rf.Status != "pending_review" {
		s.mu.Unlock()
		problem(w, 409, "invalid_state")
		return
	}
	rf.Status = "approved"
	b, _ := json.Marshal(s.refundJSON(rf))
	s.mu.Unlock()
	// The refund worker submits it to the channel a moment later.
	time.AfterFunc(20*time.Millisecond, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if rf.Status == "approved" {
			rf.Status = "processing"
		}
	})
	reply(w, 200, b)
}

func (s *Service) getRefund(w http.ResponseWriter, id string) {
	s.mu.Lock()
	rf := s.refunds[id]
	var b []byte
	if rf != nil {
		b, _ = json.Marshal(s.refundJSON(rf))
	}
	s.mu.Unlock()
	if rf == nil {
		problem(w, 404, "not_found")
		return
	}
	reply(w, 200, b)
}

func (s *Service) spend(body []byte) (int, []byte) {
	var req struct {
		UserID   string `json:"user_id"`
		Diamonds int64  `json:"diamonds"`
	}
	_ = json.Unmarshal(body, &req)
	s.mu.Lock()
	defer s.mu.Unlock()
	wal := s.wallet(req.UserID)
	if req.Diamonds <= 0 || wal.Available < req.Diamonds {
		return 409, []byte(`{"status":409,"code":"insufficient_diamonds"}`)
	}
	wal.Available -= req.Diamonds
	b, _ := json.Marshal(map[string]any{"id": s.id("s"), "user_id": req.UserID, "diamonds": req.Diamonds, "available_after": wal.Available})
	return 201, b
}

func (s *Service) getWallet(w http.ResponseWriter, user string) {
	s.mu.Lock()
	wal := *s.wallet(user)
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"user_id": user, "available": wal.Available, "held": wal.Held, "debt": wal.Debt})
	reply(w, 200, b)
}
