package risk_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/risk"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func order(amount int64) risk.Paid {
	return risk.Paid{OrderID: "now", Channel: "alipay", AmountFen: amount, PaidAt: t0}
}

func paid(id, ch string, amount int64, ago time.Duration) risk.Paid {
	return risk.Paid{OrderID: id, Channel: ch, AmountFen: amount, PaidAt: t0.Add(-ago)}
}

// history returns n old recharges of amount, far outside every window, so
// they only feed the median.
func history(n int, amount int64) []risk.Paid {
	out := make([]risk.Paid, n)
	for i := range out {
		out[i] = paid(fmt.Sprintf("old%d", i), "wechatpay", amount, time.Duration(i+1)*24*time.Hour)
	}
	return out
}

func codes(a risk.Assessment) []string {
	out := []string{}
	for _, f := range a.Flags {
		out = append(out, f.Code)
	}
	return out
}

func TestDuplicate(t *testing.T) {
	const amt = 648_00
	tests := []struct {
		name   string
		recent []risk.Paid
		want   bool
	}{
		{"same instant", []risk.Paid{paid("a", "alipay", amt, 0)}, true},
		{"one second inside window", []risk.Paid{paid("a", "alipay", amt, 10*time.Minute-time.Second)}, true},
		{"exactly at window edge", []risk.Paid{paid("a", "alipay", amt, 10*time.Minute)}, true},
		{"one second outside window", []risk.Paid{paid("a", "alipay", amt, 10*time.Minute+time.Second)}, false},
		{"other channel", []risk.Paid{paid("a", "wechatpay", amt, time.Minute)}, false},
		{"other amount", []risk.Paid{paid("a", "alipay", amt+1, time.Minute)}, false},
		{"no history", nil, false},
		{"own order in recent is ignored", []risk.Paid{{OrderID: "now", Channel: "alipay", AmountFen: amt, PaidAt: t0}}, false},
		{"credited before, stamped later by a clock running ahead", []risk.Paid{paid("a", "alipay", amt, -time.Second)}, true},
		{"match behind a non-match", []risk.Paid{paid("b", "wechatpay", amt, time.Minute), paid("a", "alipay", amt, 2*time.Minute)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := risk.Assess(risk.Input{Order: order(amt), Recent: append(tt.recent, history(3, amt)...)}, risk.DefaultThresholds())
			assert.Equal(t, tt.want, a.Has(risk.CodeDuplicate), codes(a))
		})
	}
}

func TestDuplicateEvidenceNamesNearestEarlierOrder(t *testing.T) {
	in := risk.Input{Order: order(600), Recent: []risk.Paid{
		paid("near", "alipay", 600, 2*time.Minute),
		paid("far", "alipay", 600, 5*time.Minute),
		paid("other", "wechatpay", 600, time.Minute),
	}}
	a := risk.Assess(in, risk.DefaultThresholds())
	require.True(t, a.Has(risk.CodeDuplicate))
	f := a.Flags[0]
	assert.Equal(t, risk.CodeDuplicate, f.Code)
	assert.Equal(t, "near", f.Evidence["order_id"])
	assert.Equal(t, int64(120), f.Evidence["seconds_apart"])

	// One credited before it but stamped a minute later (another replica's
	// clock): zero seconds from it.
	in.Recent = append(in.Recent, paid("ahead", "alipay", 600, -time.Minute))
	a = risk.Assess(in, risk.DefaultThresholds())
	require.True(t, a.Has(risk.CodeDuplicate))
	assert.Equal(t, "ahead", a.Flags[0].Evidence["order_id"])
	assert.Equal(t, int64(0), a.Flags[0].Evidence["seconds_apart"])
}

func TestBurst(t *testing.T) {
	// Distinct amounts and channels so only the burst rule can fire.
	p := func(id string, ago time.Duration) risk.Paid { return paid(id, "ch-"+id, 100+int64(len(id)), ago) }
	tests := []struct {
		name   string
		recent []risk.Paid
		want   bool
	}{
		{"alone", nil, false},
		{"two including this one", []risk.Paid{p("a", time.Minute)}, false},
		{"three, oldest one second inside", []risk.Paid{p("a", time.Minute), p("bb", 10*time.Minute-time.Second)}, true},
		{"three, oldest exactly at window edge", []risk.Paid{p("a", time.Minute), p("bb", 10*time.Minute)}, true},
		{"three, oldest one second outside", []risk.Paid{p("a", time.Minute), p("bb", 10*time.Minute+time.Second)}, false},
		{"unsorted input", []risk.Paid{p("bb", 9*time.Minute), p("ccc", time.Hour), p("a", time.Minute)}, true},
		// Credited before it, stamped later: counted, without moving the
		// window, so one clock far ahead hides nothing.
		{"stamped later by a clock running ahead", []risk.Paid{p("a", -2*time.Minute), p("bb", 10*time.Minute)}, true},
		{"stamped an hour later", []risk.Paid{p("a", -time.Hour), p("bb", 9*time.Minute)}, true},
		{"stamped later, the window still counts from the order", []risk.Paid{p("a", -2*time.Minute), p("bb", 10*time.Minute+time.Second)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := risk.Assess(risk.Input{Order: order(99), Recent: tt.recent}, risk.DefaultThresholds())
			assert.Equal(t, tt.want, a.Has(risk.CodeBurst), codes(a))
			if tt.want {
				assert.Equal(t, []string{risk.CodeBurst}, codes(a))
				assert.Equal(t, 3, a.Flags[0].Evidence["count"])
			}
		})
	}
}

func TestUnusualAmount(t *testing.T) {
	tests := []struct {
		name   string
		amount int64
		recent []risk.Paid
		want   bool
	}{
		// Median ¥50: ×10 = ¥500 coincides with the ¥500 floor.
		{"exactly 10× and exactly ¥500", 500_00, history(5, 50_00), true},
		{"one fen under 10× and ¥500", 500_00 - 1, history(5, 50_00), false},
		// Median ¥60: ×10 = ¥600 is the binding bound.
		{"exactly 10× above ¥500", 600_00, history(5, 60_00), true},
		{"one fen under 10×", 600_00 - 1, history(5, 60_00), false},
		// Median ¥6: ×10 = ¥60, so the ¥500 floor binds.
		{"exactly ¥500, far above 10×", 500_00, history(5, 6_00), true},
		{"one fen under ¥500", 500_00 - 1, history(5, 6_00), false},
		{"first recharge ¥999.99", 999_99, nil, false},
		{"first recharge ¥1000", 1000_00, nil, true},
		{"one credited before, stamped later: not a first", 1000_00, []risk.Paid{paid("a", "wechatpay", 648_00, -time.Minute)}, false},
		{"¥1000 with a history of ¥648", 1000_00, history(3, 648_00), false},
		// Even count: middle values ¥6 and ¥648, median ¥327 → threshold ¥3270.
		{"even count uses mean of middles: ¥3270", 3270_00, append(history(1, 6_00), history(1, 648_00)...), true},
		{"even count uses mean of middles: ¥3269.99", 3270_00 - 1, append(history(1, 6_00), history(1, 648_00)...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.recent {
				tt.recent[i].OrderID = fmt.Sprintf("h%d", i) // unique ids across appended histories
			}
			a := risk.Assess(risk.Input{Order: order(tt.amount), Recent: tt.recent}, risk.DefaultThresholds())
			assert.Equal(t, tt.want, a.Has(risk.CodeUnusualAmount), codes(a))
		})
	}
}

func TestUnusualAmountUsesOnlyNewestSample(t *testing.T) {
	th := risk.DefaultThresholds()
	// 20 newest at ¥6 then 30 older at ¥648: only the ¥6 ones are sampled.
	recent := history(50, 648_00)
	for i := range 20 {
		recent[i].AmountFen = 6_00
	}
	a := risk.Assess(risk.Input{Order: order(500_00), Recent: recent}, th)
	require.True(t, a.Has(risk.CodeUnusualAmount))
	assert.Equal(t, int64(6_00), a.Flags[0].Evidence["median_fen"])
	assert.Equal(t, 20, a.Flags[0].Evidence["sample"])

	th.MedianSample = 0 // all given: median ¥648
	assert.False(t, risk.Assess(risk.Input{Order: order(500_00), Recent: recent}, th).Accidental())
}

func TestMedianFen(t *testing.T) {
	tests := []struct {
		in   []int64
		want int64
	}{
		{nil, 0},
		{[]int64{7}, 7},
		{[]int64{3, 1, 2}, 2},
		{[]int64{1, 2}, 1}, // 1.5 rounds down
		{[]int64{600, 64800}, 32700},
		{[]int64{4, 1, 3, 2}, 2}, // 2.5 rounds down
		{[]int64{9_000_000_000_000_000_000, 9_100_000_000_000_000_000}, 9_050_000_000_000_000_000},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, risk.MedianFen(tt.in), tt.in)
	}
}

func TestMinor(t *testing.T) {
	a := risk.Assess(risk.Input{Order: order(6_00), Minor: true, Recent: history(3, 6_00)}, risk.DefaultThresholds())
	assert.Equal(t, []string{risk.CodeMinor}, codes(a))
	assert.Equal(t, risk.ScoreMinor, a.Score)
	assert.True(t, a.Accidental())

	a = risk.Assess(risk.Input{Order: order(6_00), Recent: history(3, 6_00)}, risk.DefaultThresholds())
	assert.False(t, a.Accidental())
	assert.Zero(t, a.Score)
	assert.Empty(t, a.Flags)
}

func TestAllRulesScoreIsCapped(t *testing.T) {
	in := risk.Input{
		Order: order(1000_00),
		Minor: true,
		Recent: []risk.Paid{
			paid("a", "alipay", 1000_00, time.Minute),
			paid("b", "wechatpay", 6_00, 2*time.Minute),
			paid("c", "wechatpay", 6_00, time.Hour),
		},
	}
	a := risk.Assess(in, risk.DefaultThresholds())
	assert.Equal(t, []string{risk.CodeMinor, risk.CodeDuplicate, risk.CodeBurst, risk.CodeUnusualAmount}, codes(a))
	assert.Equal(t, risk.MaxScore, a.Score)
}

func TestZeroThresholdsDisableRules(t *testing.T) {
	in := risk.Input{Order: order(1000_00), Recent: []risk.Paid{
		paid("a", "alipay", 1000_00, 0), paid("b", "alipay", 1, 0), paid("c", "alipay", 1, 0),
	}}
	assert.False(t, risk.Assess(in, risk.Thresholds{}).Accidental())
	assert.False(t, risk.Assess(risk.Input{Order: order(1 << 62)}, risk.Thresholds{}).Accidental())
}

func TestUnusualAmountNoOverflow(t *testing.T) {
	th := risk.DefaultThresholds()
	th.UnusualMinFen = 0
	in := risk.Input{Order: order(1 << 62), Recent: history(1, 1<<61)}
	assert.False(t, risk.Assess(in, th).Has(risk.CodeUnusualAmount))
}
