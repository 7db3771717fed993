package load

import (
	"fmt"
	"sort"
	"strings"
)

// Wallet is a user's balance as the service reports it.
type Wallet struct {
	Available int64 `json:"available"`
	Held      int64 `json:"held"`
	Debt      int64 `json:"debt"`
}

// Credit is one journal that issued diamonds to a user (a posting on an
// issuance account), as found in the database.
type Credit struct {
	UserID    string
	Reference string // recharge:<order id> for an order's credit
	Diamonds  int64
}

// Observation is what the service and its database say after a run.
type Observation struct {
	// Wallets of the run's users, read through the admin API.
	Wallets map[string]Wallet
	// Credits of the run's users; nil when the database was not read.
	Credits []Credit
	// RefundStatus by refund id, read through the admin API.
	RefundStatus map[string]string
	// OrderStatus by order id from the database; nil when not read.
	OrderStatus map[string]string
	// Ledger is what `diamondd ledger verify` reported; LedgerChecked says
	// whether it ran.
	Ledger        []string
	LedgerChecked bool
}

// CheckResult is one invariant and what broke it.
type CheckResult struct {
	Name     string   `json:"name"`
	Checked  int      `json:"checked"`
	Skipped  bool     `json:"skipped,omitempty"`
	Failures []string `json:"failures,omitempty"`
}

// Passed reports whether nothing broke the invariant.
func (c CheckResult) Passed() bool { return len(c.Failures) == 0 }

// CheckReport is every check after a run.
type CheckReport struct {
	Checks []CheckResult `json:"checks"`
}

// OK reports whether every check passed.
func (r CheckReport) OK() bool {
	for _, c := range r.Checks {
		if !c.Passed() {
			return false
		}
	}
	return true
}

// Check names, stable for scripts reading the JSON.
const (
	CheckAckedOnce      = "acknowledged payments credited exactly once"
	CheckNoDouble       = "no order credited twice"
	CheckNoStray        = "no credit without a payment"
	CheckWallets        = "wallets equal the model"
	CheckRefunds        = "acknowledged refunds succeeded"
	CheckAllAcked       = "every payment acknowledged (redeliveries drained)"
	CheckResolved       = "every operation's outcome known"
	CheckLedger         = "diamondd ledger verify clean"
	CheckOrderStatus    = "paid orders are paid"
	maxFailuresReported = 20
)

// refund statuses whose diamonds went back to available.
func refundReturned(status string) bool {
	return status == "failed" || status == "rejected" || status == "cancelled"
}

// refund statuses whose diamonds are still held.
func refundHeld(status string) bool {
	return status == "pending_review" || status == "approved" || status == "processing"
}

// Check compares what the service says with what the model predicts.
func Check(exp Expectation, obs Observation) CheckReport {
	var rep CheckReport
	add := func(c CheckResult) {
		if len(c.Failures) > maxFailuresReported {
			n := len(c.Failures)
			c.Failures = append(c.Failures[:maxFailuresReported], fmt.Sprintf("... and %d more", n-maxFailuresReported))
		}
		rep.Checks = append(rep.Checks, c)
	}

	// Credits by order, from the database.
	perOrder := map[string][]Credit{}
	var stray []Credit
	for _, c := range obs.Credits {
		id, ok := strings.CutPrefix(c.Reference, "recharge:")
		if o, known := exp.Orders[id]; ok && known && o.UserID == c.UserID {
			perOrder[id] = append(perOrder[id], c)
		} else {
			stray = append(stray, c)
		}
	}
	dbRead := obs.Credits != nil

	once := CheckResult{Name: CheckAckedOnce, Skipped: !dbRead}
	double := CheckResult{Name: CheckNoDouble, Skipped: !dbRead}
	noStray := CheckResult{Name: CheckNoStray, Skipped: !dbRead}
	allAcked := CheckResult{Name: CheckAllAcked}
	for _, id := range sortedKeys(exp.Orders) {
		o := exp.Orders[id]
		cs := perOrder[id]
		var got int64
		for _, c := range cs {
			got += c.Diamonds
		}
		if o.PaySent {
			allAcked.Checked++
			if !o.Acked {
				allAcked.Failures = append(allAcked.Failures, fmt.Sprintf("order %s (user %s): payment never acknowledged", id, o.UserID))
			}
		}
		if !dbRead {
			continue
		}
		double.Checked++
		if len(cs) > 1 {
			double.Failures = append(double.Failures, fmt.Sprintf("order %s (user %s): credited %d times (%d diamonds)", id, o.UserID, len(cs), got))
		}
		if o.Acked {
			once.Checked++
			switch {
			case len(cs) == 0:
				once.Failures = append(once.Failures, fmt.Sprintf("order %s (user %s): payment acknowledged, never credited (lost %d diamonds)", id, o.UserID, o.Diamonds))
			case len(cs) == 1 && got != o.Diamonds:
				once.Failures = append(once.Failures, fmt.Sprintf("order %s (user %s): credited %d diamonds, order is for %d", id, o.UserID, got, o.Diamonds))
			case len(cs) > 1:
				once.Failures = append(once.Failures, fmt.Sprintf("order %s (user %s): credited %d times", id, o.UserID, len(cs)))
			}
		}
		if !o.PaySent && len(cs) > 0 {
			noStray.Failures = append(noStray.Failures, fmt.Sprintf("order %s (user %s): credited %d diamonds but never paid", id, o.UserID, got))
		}
	}
	if dbRead {
		noStray.Checked = len(obs.Credits)
		for _, c := range stray {
			noStray.Failures = append(noStray.Failures, fmt.Sprintf("user %s: credit %q of %d diamonds matches no order of the run", c.UserID, c.Reference, c.Diamonds))
		}
	}
	add(once)
	add(double)
	add(noStray)
	add(allAcked)

	// Wallets: credits of acknowledged orders (and of unacknowledged ones the
	// database shows credited once: the payment did arrive), minus spends,
	// minus refunds that did not fail.
	type bal struct{ available, held int64 }
	want := map[string]*bal{}
	for _, u := range exp.Users {
		want[u] = &bal{available: -exp.Spent[u]}
	}
	for id, o := range exp.Orders {
		b := want[o.UserID]
		if b == nil {
			b = &bal{}
			want[o.UserID] = b
		}
		if o.Acked || (o.PaySent && dbRead && len(perOrder[id]) == 1) {
			b.available += o.Diamonds
		}
	}
	refunds := CheckResult{Name: CheckRefunds}
	for _, id := range sortedKeys(exp.Refunds) {
		r := exp.Refunds[id]
		st, seen := obs.RefundStatus[id]
		b := want[r.UserID]
		if b == nil {
			b = &bal{}
			want[r.UserID] = b
		}
		switch {
		case !seen:
			// Not read back: assume the status the acknowledgements imply.
			b.available -= r.Diamonds
			if !r.WebhookAcked {
				b.held += r.Diamonds
			}
		case refundReturned(st):
		case refundHeld(st):
			b.available -= r.Diamonds
			b.held += r.Diamonds
		default: // succeeded: gone for good
			b.available -= r.Diamonds
		}
		if r.WebhookAcked {
			refunds.Checked++
			if seen && st != "succeeded" {
				refunds.Failures = append(refunds.Failures, fmt.Sprintf("refund %s (order %s): refund.succeeded acknowledged, status is %s", id, r.OrderID, st))
			}
		}
	}
	wallets := CheckResult{Name: CheckWallets}
	for _, u := range sortedKeys(want) {
		w, ok := obs.Wallets[u]
		wallets.Checked++
		exp := want[u]
		switch {
		case !ok:
			wallets.Failures = append(wallets.Failures, fmt.Sprintf("user %s: wallet not read", u))
		case w.Available != exp.available || w.Held != exp.held || w.Debt != 0:
			wallets.Failures = append(wallets.Failures, fmt.Sprintf("user %s: wallet available=%d held=%d debt=%d, model says available=%d held=%d debt=0 (%+d diamonds)",
				u, w.Available, w.Held, w.Debt, exp.available, exp.held, w.Available+w.Held-exp.available-exp.held))
		}
	}
	add(wallets)
	add(refunds)

	if obs.OrderStatus != nil {
		st := CheckResult{Name: CheckOrderStatus}
		for _, id := range sortedKeys(exp.Orders) {
			o := exp.Orders[id]
			if !o.Acked {
				continue
			}
			st.Checked++
			switch s := obs.OrderStatus[id]; s {
			case "paid", "partially_refunded", "refunded":
			default:
				st.Failures = append(st.Failures, fmt.Sprintf("order %s (user %s): payment acknowledged, status %q", id, o.UserID, s))
			}
		}
		add(st)
	}

	resolved := CheckResult{Name: CheckResolved, Checked: 1}
	if exp.Unresolved > 0 {
		resolved.Failures = append(resolved.Failures, fmt.Sprintf("%d operation(s) never got a definitive answer", exp.Unresolved))
	}
	add(resolved)

	led := CheckResult{Name: CheckLedger, Skipped: !obs.LedgerChecked, Checked: 1}
	if !obs.LedgerChecked {
		led.Checked = 0
	}
	led.Failures = append(led.Failures, obs.Ledger...)
	add(led)
	return rep
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
