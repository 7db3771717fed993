package load

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// base is a sound run: two users, three paid orders, one unpaid, a spend and
// a refund that succeeded; obs is what a correct service shows for it.
func base() (Expectation, Observation) {
	m := NewModel()
	for _, o := range []Order{
		{ID: "o1", UserID: "u1", AmountFen: 600, Diamonds: 60},
		{ID: "o2", UserID: "u1", AmountFen: 1200, Diamonds: 120},
		{ID: "o3", UserID: "u2", AmountFen: 3000, Diamonds: 300},
		{ID: "o4", UserID: "u2", AmountFen: 600, Diamonds: 60}, // never paid
	} {
		o.Reply = &Price{AmountFen: o.AmountFen, Diamonds: o.Diamonds}
		m.OrderCreated(o)
	}
	for _, id := range []string{"o1", "o2", "o3"} {
		m.PaymentSent(id)
		m.PaymentAcked(id, id == "o3")
	}
	if m.Reserve("u1", 5) != 5 {
		panic("reserve")
	}
	m.Spent("u1", 5)
	m.RefundAccepted(Refund{ID: "r1", OrderID: "o3", UserID: "u2", AmountFen: 3000, Diamonds: 300}, 300)
	m.RefundWebhookAcked("r1")
	obs := Observation{
		Wallets: map[string]Wallet{"u1": {Available: 175}, "u2": {}},
		Credits: []Credit{
			{UserID: "u1", Reference: "recharge:o1", Diamonds: 60},
			{UserID: "u1", Reference: "recharge:o2", Diamonds: 120},
			{UserID: "u2", Reference: "recharge:o3", Diamonds: 300},
		},
		RefundStatus:  map[string]string{"r1": "succeeded"},
		Refunds:       []RefundRow{{ID: "r1", UserID: "u2", OrderID: "o3", Kind: "user", Status: "succeeded", AmountFen: 3000, Diamonds: 300}},
		OrderStatus:   map[string]string{"o1": "paid", "o2": "paid", "o3": "refunded", "o4": "pending"},
		LedgerChecked: true,
	}
	return m.Expect(), obs
}

// refund replaces refund r1 of the expectation.
func refund(e *Expectation, change func(*Refund)) {
	r := e.Refunds["r1"]
	change(&r)
	e.Refunds["r1"] = r
}

func failed(rep CheckReport) map[string][]string {
	out := map[string][]string{}
	for _, c := range rep.Checks {
		if !c.Passed() {
			out[c.Name] = c.Failures
		}
	}
	return out
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		plant func(*Expectation, *Observation)
		fails map[string]string // check → a substring of its failure
	}{
		{name: "sound run", plant: func(*Expectation, *Observation) {}},
		{
			name: "double credit under a second journal of the same order",
			plant: func(e *Expectation, o *Observation) {
				o.Credits = append(o.Credits, Credit{UserID: "u1", Reference: "recharge:o1", Diamonds: 60})
				w := o.Wallets["u1"]
				w.Available += 60
				o.Wallets["u1"] = w
			},
			fails: map[string]string{
				CheckAckedOnce: "order o1 (user u1): credited 2 times",
				CheckNoDouble:  "order o1 (user u1): credited 2 times (120 diamonds)",
				CheckWallets:   "user u1: wallet available=235 held=0 debt=0, model says available=175 held=0 debt=0 (+60 diamonds)",
			},
		},
		{
			name: "double credit under another reference",
			plant: func(e *Expectation, o *Observation) {
				o.Credits = append(o.Credits, Credit{UserID: "u2", Reference: "recharge:o3:again", Diamonds: 300})
				o.Wallets["u2"] = Wallet{Available: 300}
			},
			fails: map[string]string{
				CheckNoStray: `user u2: credit "recharge:o3:again" of 300 diamonds matches no order of the run`,
				CheckWallets: "(+300 diamonds)",
			},
		},
		{
			name: "lost credit",
			plant: func(e *Expectation, o *Observation) {
				o.Credits = o.Credits[1:]
				o.Wallets["u1"] = Wallet{Available: 115}
			},
			fails: map[string]string{
				CheckAckedOnce: "order o1 (user u1): payment acknowledged, never credited (lost 60 diamonds)",
				CheckWallets:   "(-60 diamonds)",
			},
		},
		{
			name: "lost credit hidden by a wallet that still adds up",
			plant: func(e *Expectation, o *Observation) {
				o.Credits = o.Credits[1:]
			},
			fails: map[string]string{CheckAckedOnce: "never credited"},
		},
		{
			name: "credit of an order that was never paid",
			plant: func(e *Expectation, o *Observation) {
				o.Credits = append(o.Credits, Credit{UserID: "u2", Reference: "recharge:o4", Diamonds: 60})
			},
			fails: map[string]string{CheckNoStray: "order o4 (user u2): credited 60 diamonds but never paid"},
		},
		{
			name:  "wrong amount credited",
			plant: func(e *Expectation, o *Observation) { o.Credits[1].Diamonds = 12 },
			fails: map[string]string{CheckAckedOnce: "order o2 (user u1): credited 12 diamonds, order is for 120"},
		},
		{
			name: "refund acknowledged but not settled",
			plant: func(e *Expectation, o *Observation) {
				o.RefundStatus["r1"] = "processing"
				o.Wallets["u2"] = Wallet{Held: 300}
			},
			fails: map[string]string{
				CheckRefunds:     "refund r1 (order o3): refund.succeeded acknowledged, status is processing",
				CheckRefundsOpen: "refund r1 (order o3, user u2): still processing after settling",
				// The channel paid it back: the diamonds must be gone.
				CheckWallets: "user u2: wallet available=0 held=300 debt=0, model says available=0 held=0 debt=0 (+300 diamonds)",
			},
		},
		{
			// The channel paid the money back, the service never acknowledged
			// it and failed the refund: the user has the money and the diamonds.
			name: "refund paid back, never acknowledged, then failed",
			plant: func(e *Expectation, o *Observation) {
				refund(e, func(r *Refund) { r.WebhookAcked = false })
				o.RefundStatus["r1"] = "failed"
				o.Wallets["u2"] = Wallet{Available: 300}
			},
			fails: map[string]string{
				CheckRefundAcked: "refund r1 (order o3, user u2): refund.succeeded never acknowledged",
				CheckRefunds:     "refund r1 (order o3): refund.succeeded sent, status is failed",
				CheckWallets:     "(+300 diamonds)",
			},
		},
		{
			name:  "webhooks still pending after settling",
			plant: func(e *Expectation, o *Observation) { o.WebhooksPending = 3 },
			fails: map[string]string{CheckPending: "3 notification(s) of the channel never acknowledged"},
		},
		{
			name: "refund never taken to the end",
			plant: func(e *Expectation, o *Observation) {
				refund(e, func(r *Refund) { r.RefundSent, r.WebhookAcked = false, false })
				o.RefundStatus["r1"] = "approved"
				o.Wallets["u2"] = Wallet{Held: 300}
			},
			fails: map[string]string{CheckRefundsOpen: "refund r1 (order o3, user u2): still approved after settling"},
		},
		{
			name: "refund succeeded without the channel's word (auto-settled)",
			plant: func(e *Expectation, o *Observation) {
				refund(e, func(r *Refund) { r.RefundSent, r.WebhookAcked = false, false })
			},
		},
		{
			// A full refund of o3 (3000 fen, 300 diamonds) that gives all the
			// money back but takes back only 150 diamonds, as the service replied.
			name: "full refund takes back half the order's diamonds",
			plant: func(e *Expectation, o *Observation) {
				refund(e, func(r *Refund) { r.Diamonds = 150 })
				o.Refunds[0].Diamonds = 150
				o.Wallets["u2"] = Wallet{Available: 150}
			},
			fails: map[string]string{
				CheckRefundAmounts: "refund r1 (order o3, user u2): full refund gives back 3000 fen and takes back 150 diamonds, the order is 3000 fen for 300 diamonds",
				CheckWallets:       "model says available=0 held=0 debt=0 (+150 diamonds)",
			},
		},
		{
			name:  "refund's row in the database differs from the order",
			plant: func(e *Expectation, o *Observation) { o.Refunds[0].AmountFen = 1500 },
			fails: map[string]string{CheckRefundAmounts: "refund r1 (order o3, user u2): the database has 1500 fen and 300 diamonds"},
		},
		{
			name: "order priced at another rate than asked",
			plant: func(e *Expectation, o *Observation) {
				ord := e.Orders["o2"]
				ord.Reply = &Price{AmountFen: 1200, Diamonds: 240}
				e.Orders["o2"] = ord
			},
			fails: map[string]string{CheckPriced: "order o2 (user u1): asked 1200 fen for 120 diamonds, the service created it for 1200 fen and 240 diamonds"},
		},
		{
			name: "refund the tool never asked for",
			plant: func(e *Expectation, o *Observation) {
				o.Refunds = append(o.Refunds, RefundRow{ID: "r9", UserID: "u1", OrderID: "o1", Kind: "duplicate_payment", Status: "processing", AmountFen: 600})
			},
			fails: map[string]string{CheckUnasked: "refund r9 (duplicate_payment, order o1, user u1): processing, 600 fen, 0 diamonds; the tool never asked for it"},
		},
		{
			name:  "refunds could not be read",
			plant: func(e *Expectation, o *Observation) { o.Refunds, o.RefundsErr = nil, errors.New("timeout") },
			fails: map[string]string{CheckUnasked: "could not read the refunds: timeout"},
		},
		{
			name: "order statuses could not be read",
			plant: func(e *Expectation, o *Observation) {
				o.OrderStatus, o.OrderStatusErr = nil, errors.New("read order statuses: timeout")
			},
			fails: map[string]string{CheckOrderStatus: "could not read the order statuses: read order statuses: timeout"},
		},
		{
			name:  "paid order not paid",
			plant: func(e *Expectation, o *Observation) { o.OrderStatus["o1"] = "pending" },
			fails: map[string]string{CheckOrderStatus: `order o1 (user u1): payment acknowledged, status "pending"`},
		},
		{
			name: "payment never acknowledged",
			plant: func(e *Expectation, o *Observation) {
				ord := e.Orders["o2"]
				ord.Acked = false
				e.Orders["o2"] = ord
			},
			fails: map[string]string{CheckAllAcked: "order o2 (user u1): payment never acknowledged"},
		},
		{
			name:  "ledger verify findings",
			plant: func(e *Expectation, o *Observation) { o.Ledger = []string{"unbalanced journal: x"} },
			fails: map[string]string{CheckLedger: "unbalanced journal: x"},
		},
		{
			name:  "unresolved operations",
			plant: func(e *Expectation, o *Observation) { e.Unresolved = 2 },
			fails: map[string]string{CheckResolved: "2 operation(s)"},
		},
		{
			name:  "debt appears",
			plant: func(e *Expectation, o *Observation) { o.Wallets["u2"] = Wallet{Debt: 1} },
			fails: map[string]string{CheckWallets: "user u2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, obs := base()
			tt.plant(&exp, &obs)
			rep := Check(exp, obs)
			got := failed(rep)
			require.Len(t, got, len(tt.fails), "failed checks: %v", got)
			for name, want := range tt.fails {
				require.Contains(t, got, name)
				require.True(t, strings.Contains(strings.Join(got[name], "\n"), want), "%s: %v does not mention %q", name, got[name], want)
			}
			require.Equal(t, len(tt.fails) == 0, rep.OK())
		})
	}
}

func TestCheckWithoutDatabase(t *testing.T) {
	exp, obs := base()
	obs.Credits, obs.Refunds, obs.OrderStatus = nil, nil, nil
	obs.LedgerChecked = false
	obs.SkipNotes = map[string]string{CheckOrderStatus: "no database (DATABASE_URL)"}
	rep := Check(exp, obs)
	require.True(t, rep.OK())
	var skipped []string
	for _, c := range rep.Checks {
		if c.Skipped {
			skipped = append(skipped, c.Name)
		}
		if c.Name == CheckOrderStatus {
			require.Equal(t, "no database (DATABASE_URL)", c.Note)
		}
	}
	// Skipped checks are shown as such, never dropped.
	require.ElementsMatch(t, []string{CheckAckedOnce, CheckNoDouble, CheckNoStray, CheckOrderStatus, CheckUnasked, CheckLedger}, skipped)
}

// Every check is in the report, in the table and in the JSON, whether it
// passed, failed or was skipped.
func TestCheckReportListsEveryCheck(t *testing.T) {
	all := []string{CheckAckedOnce, CheckNoDouble, CheckNoStray, CheckAllAcked, CheckRefundAcked, CheckPending, CheckPriced,
		CheckWallets, CheckRefunds, CheckRefundAmounts, CheckRefundsOpen, CheckUnasked, CheckOrderStatus, CheckResolved, CheckLedger}
	for _, nodb := range []bool{false, true} {
		exp, obs := base()
		if nodb {
			obs.Credits, obs.Refunds, obs.OrderStatus, obs.LedgerChecked = nil, nil, nil, false
		}
		rep := Check(exp, obs)
		var names []string
		for _, c := range rep.Checks {
			names = append(names, c.Name)
		}
		require.Equal(t, all, names)
		var buf bytes.Buffer
		rep.WriteTable(&buf)
		raw, err := json.Marshal(rep)
		require.NoError(t, err)
		for _, n := range all {
			require.Contains(t, buf.String(), n)
			require.Contains(t, string(raw), strconv.Quote(n))
		}
	}
}
