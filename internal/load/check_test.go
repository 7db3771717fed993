package load

import (
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
		LedgerChecked: true,
	}
	return m.Expect(), obs
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
			fails: map[string]string{CheckRefunds: "refund r1 (order o3): refund.succeeded acknowledged, status is processing"},
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
	obs.Credits = nil
	obs.LedgerChecked = false
	rep := Check(exp, obs)
	require.True(t, rep.OK())
	skipped := 0
	for _, c := range rep.Checks {
		if c.Skipped {
			skipped++
		}
	}
	require.Equal(t, 4, skipped) // once, double, stray, ledger
}
