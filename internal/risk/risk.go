// Package risk flags recharges that look accidental: the same payment made
// twice, a burst of payments, an amount far above the user's habit, or a
// payment from a minor's account.
//
// The rules are pure functions over plain inputs so they can be tested at
// every threshold without a database; the caller loads the user's recent paid
// recharges and stores the resulting flags on the order. A flag never blocks
// a credit (money received always buys what it paid for): flags drive fast
// refunds and the support queue.
package risk

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Flag codes, stable: they are stored on orders and shown to support.
const (
	CodeDuplicate     = "duplicate_recharge"
	CodeBurst         = "burst"
	CodeUnusualAmount = "unusual_amount"
	CodeMinor         = "minor_account"
)

// Scores per flag. They only order the support queue, so they are fixed here
// rather than configured; a minor's payment ranks first because it is the
// case a refund is most clearly owed.
const (
	ScoreMinor         = 50
	ScoreDuplicate     = 40
	ScoreUnusualAmount = 30
	ScoreBurst         = 20
	// MaxScore caps Assessment.Score so the scale stays 0..100 however many
	// rules fire.
	MaxScore = 100
)

// Thresholds configure the rules. A non-positive DuplicateWindow,
// BurstWindow, BurstCount or UnusualMultiple turns that rule off, and a
// non-positive FirstRechargeMinFen turns off the first-recharge check, so a
// zero in configuration can never flag every order.
type Thresholds struct {
	// DuplicateWindow: the same amount on the same channel paid within this
	// of another paid recharge (inclusive) is a duplicate.
	DuplicateWindow time.Duration
	// BurstWindow and BurstCount: BurstCount or more paid recharges,
	// including this one, within BurstWindow (inclusive) are a burst.
	BurstWindow time.Duration
	BurstCount  int
	// UnusualMultiple and UnusualMinFen: an amount at or above
	// UnusualMultiple × the median of the user's last MedianSample paid
	// recharges, and at or above UnusualMinFen, is unusual.
	UnusualMultiple int64
	UnusualMinFen   int64
	// FirstRechargeMinFen: a first paid recharge at or above this is unusual.
	FirstRechargeMinFen int64
	// MedianSample is how many of the newest earlier recharges make the
	// median; a non-positive value uses all that are given.
	MedianSample int
}

// DefaultThresholds returns the values of DESIGN.md: 10 minutes, 3 in 10
// minutes, ×10 and ¥500, ¥1000 for a first recharge, a median over 20.
func DefaultThresholds() Thresholds {
	return Thresholds{
		DuplicateWindow:     10 * time.Minute,
		BurstWindow:         10 * time.Minute,
		BurstCount:          3,
		UnusualMultiple:     10,
		UnusualMinFen:       50_000,
		FirstRechargeMinFen: 100_000,
		MedianSample:        20,
	}
}

// Paid is one paid recharge.
type Paid struct {
	OrderID   string
	Channel   string
	AmountFen int64
	PaidAt    time.Time
}

// Input is everything the rules look at.
type Input struct {
	// Order is the recharge being credited now.
	Order Paid
	// Minor reports that the user was under 18 when the order was created
	// (from the JWT birthdate, recorded on the order; see IsMinor).
	Minor bool
	// Recent holds the user's other paid recharges, newest first: every one
	// within the windows of Order.PaidAt (or, for a user with very many, the
	// newest of them: enough to see the burst), and at least the
	// MedianSample newest. The caller reads them under the user's lock, so
	// every one was credited before Order, whatever its PaidAt says: the
	// clock of another replica may run ahead, and a transaction reads its
	// clock before it waits for the lock. Entries with Order's own id are
	// ignored, and the order of the slice is not relied on.
	Recent []Paid
}

// Flag is one rule that fired, with the evidence support sees.
type Flag struct {
	Code     string         `json:"code"`
	Score    int            `json:"score"`
	Evidence map[string]any `json:"evidence,omitempty"`
}

// Assessment is the outcome of the rules for one order.
type Assessment struct {
	Flags []Flag `json:"flags"`
	Score int    `json:"score"`
}

// Accidental reports whether any rule fired; it is what makes a refund of
// this order eligible for the fast path.
func (a Assessment) Accidental() bool { return len(a.Flags) > 0 }

// Has reports whether the assessment carries a flag with this code.
func (a Assessment) Has(code string) bool {
	return slices.ContainsFunc(a.Flags, func(f Flag) bool { return f.Code == code })
}

// Assess runs every rule on in. Flags come in a fixed order (minor,
// duplicate, burst, unusual amount) so stored assessments compare equal.
func Assess(in Input, th Thresholds) Assessment {
	earlier := earlierPaid(in)
	order := in.Order
	var a Assessment
	if in.Minor {
		a.add(Flag{Code: CodeMinor, Score: ScoreMinor})
	}
	if f, ok := duplicate(order, earlier, th); ok {
		a.add(f)
	}
	if f, ok := burst(order, earlier, th); ok {
		a.add(f)
	}
	if f, ok := unusualAmount(order, earlier, th); ok {
		a.add(f)
	}
	return a
}

func (a *Assessment) add(f Flag) {
	a.Flags = append(a.Flags, f)
	a.Score = min(a.Score+f.Score, MaxScore)
}

// earlierPaid returns the recharges credited before the order, newest
// first. A late webhook of an older order is no exception: the order is
// paid when the money is reported, so the others were paid before it.
func earlierPaid(in Input) []Paid {
	out := make([]Paid, 0, len(in.Recent))
	for _, p := range in.Recent {
		if p.OrderID != in.Order.OrderID {
			out = append(out, p)
		}
	}
	// Sorted here rather than trusted, since a mis-ordered slice would
	// silently change the median sample.
	slices.SortStableFunc(out, func(a, b Paid) int { return b.PaidAt.Compare(a.PaidAt) })
	return out
}

// within reports p paid within window before order. One stamped after it
// was credited before it all the same (another replica's clock runs ahead):
// it is no distance away, and it does not move the window, so one clock far
// off cannot push the user's other recharges out of every window.
func within(order, p Paid, window time.Duration) bool {
	return apart(order, p) <= window
}

func apart(order, p Paid) time.Duration {
	return max(order.PaidAt.Sub(p.PaidAt), 0)
}

func duplicate(order Paid, earlier []Paid, th Thresholds) (Flag, bool) {
	if th.DuplicateWindow <= 0 {
		return Flag{}, false
	}
	for _, p := range earlier {
		if !within(order, p, th.DuplicateWindow) {
			break // newest first: nothing older can be within the window
		}
		if p.AmountFen == order.AmountFen && p.Channel == order.Channel {
			return Flag{Code: CodeDuplicate, Score: ScoreDuplicate, Evidence: map[string]any{
				"order_id":      p.OrderID,
				"paid_at":       p.PaidAt,
				"seconds_apart": int64(apart(order, p) / time.Second),
			}}, true
		}
	}
	return Flag{}, false
}

func burst(order Paid, earlier []Paid, th Thresholds) (Flag, bool) {
	if th.BurstWindow <= 0 || th.BurstCount <= 0 {
		return Flag{}, false
	}
	ids := []string{}
	for _, p := range earlier {
		if !within(order, p, th.BurstWindow) {
			break
		}
		ids = append(ids, p.OrderID)
	}
	count := len(ids) + 1 // this order counts
	if count < th.BurstCount {
		return Flag{}, false
	}
	return Flag{Code: CodeBurst, Score: ScoreBurst, Evidence: map[string]any{
		"count":          count,
		"window_seconds": int64(th.BurstWindow / time.Second),
		"order_ids":      ids,
	}}, true
}

func unusualAmount(order Paid, earlier []Paid, th Thresholds) (Flag, bool) {
	if len(earlier) == 0 {
		if th.FirstRechargeMinFen > 0 && order.AmountFen >= th.FirstRechargeMinFen {
			return Flag{Code: CodeUnusualAmount, Score: ScoreUnusualAmount, Evidence: map[string]any{
				"first_recharge": true,
				"amount_fen":     order.AmountFen,
				"threshold_fen":  th.FirstRechargeMinFen,
			}}, true
		}
		return Flag{}, false
	}
	if th.UnusualMultiple <= 0 || order.AmountFen < th.UnusualMinFen {
		return Flag{}, false
	}
	sample := earlier
	if th.MedianSample > 0 && len(sample) > th.MedianSample {
		sample = sample[:th.MedianSample]
	}
	m := MedianFen(amounts(sample))
	// multiple × median could overflow for absurd amounts; an order cannot
	// exceed MaxInt64 fen, so such a product is never reached.
	if m > 0 && m > math.MaxInt64/th.UnusualMultiple {
		return Flag{}, false
	}
	limit := th.UnusualMultiple * m
	if order.AmountFen < limit {
		return Flag{}, false
	}
	return Flag{Code: CodeUnusualAmount, Score: ScoreUnusualAmount, Evidence: map[string]any{
		"amount_fen":    order.AmountFen,
		"median_fen":    m,
		"sample":        len(sample),
		"multiple":      th.UnusualMultiple,
		"threshold_fen": max(limit, th.UnusualMinFen),
	}}, true
}

func amounts(ps []Paid) []int64 {
	out := make([]int64, len(ps))
	for i, p := range ps {
		out[i] = p.AmountFen
	}
	return out
}

// MedianFen returns the median of amounts, 0 for none. For an even count it
// is the mean of the two middle values rounded down to whole fen: the usual
// definition, so a user who alternates ¥6 and ¥648 is judged against ¥327
// rather than ¥6 (the lower middle would flag their ordinary ¥648), while
// staying in integer fen so no float enters a money comparison. Rounding
// down moves the ×10 threshold by at most 5 fen, towards flagging.
func MedianFen(amounts []int64) int64 {
	if len(amounts) == 0 {
		return 0
	}
	s := slices.Clone(amounts)
	slices.SortFunc(s, cmp.Compare[int64])
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	a, b := s[n/2-1], s[n/2]
	// a + (b-a)/2 cannot overflow for a <= b of the same sign, and amounts
	// are never negative; it equals floor((a+b)/2) for non-negative values.
	return a + (b-a)/2
}
