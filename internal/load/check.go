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
	// Refunds are every refund of the run's users, from the database,
	// whoever asked for them; nil when not read. RefundsErr is why reading
	// them failed (the check fails with it).
	Refunds    []RefundRow
	RefundsErr error
	// OrderStatus by order id from the database; nil when not read.
	// OrderStatusErr is why reading them failed (the check fails with it).
	OrderStatus    map[string]string
	OrderStatusErr error
	// WebhooksPending is how many of the channel's notifications were still
	// unacknowledged after settling.
	WebhooksPending int
	// SkipNotes say, by check name, why a check's data was not read (no
	// database, no such table); the check shows as skipped with the note.
	SkipNotes map[string]string
	// Ledger is what `diamondd ledger verify` reported; LedgerChecked says
	// whether it ran.
	Ledger        []string
	LedgerChecked bool
}

// RefundRow is one refund as the database has it.
type RefundRow struct {
	ID        string
	UserID    string
	OrderID   string
	Kind      string // user, agent, duplicate_payment, payment_return
	Status    string
	AmountFen int64
	Diamonds  int64
}

// CheckResult is one invariant and what broke it.
type CheckResult struct {
	Name     string   `json:"name"`
	Checked  int      `json:"checked"`
	Skipped  bool     `json:"skipped,omitempty"`
	Note     string   `json:"note,omitempty"` // why it was skipped
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
	CheckRefunds        = "refunds the channel paid back succeeded"
	CheckAllAcked       = "every payment acknowledged (redeliveries drained)"
	CheckRefundAcked    = "every refund notification acknowledged"
	CheckPending        = "no webhook still pending after settling"
	CheckPriced         = "orders priced as asked"
	CheckRefundAmounts  = "refunds take back the order's diamonds"
	CheckRefundsOpen    = "no refund still open after settling"
	CheckUnasked        = "no refund the tool did not ask for"
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
		if c.Skipped && c.Note == "" {
			c.Note = obs.SkipNotes[c.Name]
		}
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

	// Refund notifications the channel sent (it paid the money back) must
	// be acknowledged, as payments are; so must every other notification.
	refundAcked := CheckResult{Name: CheckRefundAcked}
	for _, id := range sortedKeys(exp.Refunds) {
		if r := exp.Refunds[id]; r.RefundSent {
			refundAcked.Checked++
			if !r.WebhookAcked {
				refundAcked.Failures = append(refundAcked.Failures, fmt.Sprintf("refund %s (order %s, user %s): refund.succeeded never acknowledged", id, r.OrderID, r.UserID))
			}
		}
	}
	add(refundAcked)
	pending := CheckResult{Name: CheckPending, Checked: 1}
	if obs.WebhooksPending > 0 {
		pending.Failures = append(pending.Failures, fmt.Sprintf("%d notification(s) of the channel never acknowledged", obs.WebhooksPending))
	}
	add(pending)

	// Orders must be what the tool asked for: the amount it asked, at the
	// service's rate. The model holds the tool's price, not the reply's.
	priced := CheckResult{Name: CheckPriced}
	for _, id := range sortedKeys(exp.Orders) {
		o := exp.Orders[id]
		if o.Reply == nil {
			continue
		}
		priced.Checked++
		if o.Reply.AmountFen != o.AmountFen || o.Reply.Diamonds != o.Diamonds {
			priced.Failures = append(priced.Failures, fmt.Sprintf("order %s (user %s): asked %d fen for %d diamonds, the service created it for %d fen and %d diamonds",
				id, o.UserID, o.AmountFen, o.Diamonds, o.Reply.AmountFen, o.Reply.Diamonds))
		}
	}
	add(priced)

	// Wallets: credits of acknowledged orders (and of unacknowledged ones the
	// database shows credited once: the payment did arrive), minus spends,
	// minus refunds that did not fail. A refund takes back its order's
	// diamonds (the tool asks for full refunds of unspent orders only),
	// whatever the service replied; one the channel paid back is gone for
	// good, whatever status the service shows.
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
	amounts := CheckResult{Name: CheckRefundAmounts}
	open := CheckResult{Name: CheckRefundsOpen}
	for _, id := range sortedKeys(exp.Refunds) {
		r := exp.Refunds[id]
		st, seen := obs.RefundStatus[id]
		b := want[r.UserID]
		if b == nil {
			b = &bal{}
			want[r.UserID] = b
		}
		take := r.Diamonds
		amounts.Checked++
		if o, ok := exp.Orders[r.OrderID]; !ok {
			amounts.Failures = append(amounts.Failures, fmt.Sprintf("refund %s: order %s is not one the tool created", id, r.OrderID))
		} else {
			take = o.Diamonds
			if r.AmountFen != o.AmountFen || r.Diamonds != o.Diamonds {
				amounts.Failures = append(amounts.Failures, fmt.Sprintf("refund %s (order %s, user %s): full refund gives back %d fen and takes back %d diamonds, the order is %d fen for %d diamonds",
					id, r.OrderID, r.UserID, r.AmountFen, r.Diamonds, o.AmountFen, o.Diamonds))
			}
		}
		switch {
		case r.RefundSent: // the channel paid it back: gone for good
			b.available -= take
		case !seen:
			b.available -= take
			b.held += take
		case refundReturned(st):
		case refundHeld(st):
			b.available -= take
			b.held += take
		default: // succeeded without the channel's word (AutoSettle): gone
			b.available -= take
		}
		if r.RefundSent {
			refunds.Checked++
			if seen && st != "succeeded" {
				what := "sent"
				if r.WebhookAcked {
					what = "acknowledged"
				}
				refunds.Failures = append(refunds.Failures, fmt.Sprintf("refund %s (order %s): refund.succeeded %s, status is %s", id, r.OrderID, what, st))
			}
		}
		open.Checked++
		switch {
		case !seen:
			open.Failures = append(open.Failures, fmt.Sprintf("refund %s (order %s): status not read", id, r.OrderID))
		case refundHeld(st):
			open.Failures = append(open.Failures, fmt.Sprintf("refund %s (order %s, user %s): still %s after settling", id, r.OrderID, r.UserID, st))
		}
	}
	// The database's rows of the tool's refunds must say the same, and
	// there must be no other refund: the tool pays each order once (a
	// storm repeats one payment, same trade), so not even a refund of a
	// duplicate payment is legitimate.
	unasked := CheckResult{Name: CheckUnasked, Skipped: obs.Refunds == nil && obs.RefundsErr == nil}
	if obs.RefundsErr != nil {
		unasked.Failures = append(unasked.Failures, "could not read the refunds: "+obs.RefundsErr.Error())
	}
	for _, row := range obs.Refunds {
		unasked.Checked++
		r, asked := exp.Refunds[row.ID]
		if !asked {
			unasked.Failures = append(unasked.Failures, fmt.Sprintf("refund %s (%s, order %s, user %s): %s, %d fen, %d diamonds; the tool never asked for it",
				row.ID, row.Kind, row.OrderID, row.UserID, row.Status, row.AmountFen, row.Diamonds))
			continue
		}
		if o, ok := exp.Orders[r.OrderID]; ok && (row.AmountFen != o.AmountFen || row.Diamonds != o.Diamonds) {
			amounts.Failures = append(amounts.Failures, fmt.Sprintf("refund %s (order %s, user %s): the database has %d fen and %d diamonds, the order is %d fen for %d diamonds",
				row.ID, r.OrderID, r.UserID, row.AmountFen, row.Diamonds, o.AmountFen, o.Diamonds))
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
	add(amounts)
	add(open)
	add(unasked)

	// A check whose data could not be read fails; one whose data is not
	// there to read shows as skipped. Neither disappears.
	st := CheckResult{Name: CheckOrderStatus, Skipped: obs.OrderStatus == nil && obs.OrderStatusErr == nil}
	if obs.OrderStatusErr != nil {
		st.Failures = append(st.Failures, "could not read the order statuses: "+obs.OrderStatusErr.Error())
	}
	if obs.OrderStatus != nil {
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
	}
	add(st)

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
