package config_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/config"
)

// valid is a configuration that passes Validate, to change one setting at a time.
func valid() config.Config {
	c := config.Defaults()
	c.DatabaseURL = "postgres://postgres@127.0.0.1:5432/diamondd"
	c.JWTSecret = "config-test-secret-0123"
	return c
}

func TestPackages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		packages string
		want     []config.Package // nil with ok: the defaults
		ok       bool
	}{
		{"", nil, true},
		{"p60:60:600", []config.Package{{ID: "p60", Diamonds: 60, AmountFen: 600, Label: "60 diamonds"}}, true},
		{"p60:60:600:Starter, p300: 300 :3000", []config.Package{
			{ID: "p60", Diamonds: 60, AmountFen: 600, Label: "Starter"},
			{ID: "p300", Diamonds: 300, AmountFen: 3000, Label: "300 diamonds"},
		}, true},
		// A price in yuan, or any trailing text, is not integer fen: it once
		// parsed as its leading digits (648.00 -> 648 fen).
		{"p6480:6480:648.00", nil, false},
		{"p60:60:6.00", nil, false},
		{"p60:60:600abc", nil, false},
		{"p60:60.5:600", nil, false},
		{"p60:60x:600", nil, false},
		{"p60:60:6e2", nil, false},
		{"p60:60:0x258", nil, false},
		{"p60:60:6_00", nil, false},
		{"p60:60:600 0", nil, false},
		{"p60:60:", nil, false},
		{"p60:60:-600", nil, false},
		{"p60:0:600", nil, false},
		{"p60:60:99999999999999999999", nil, false},
		{"p60:60", nil, false},
		{"p60:60:600,p60:70:700", nil, false},
		// the API takes a package_id of 40 characters at most
		{strings.Repeat("p", 40) + ":60:600", []config.Package{{ID: strings.Repeat("p", 40), Diamonds: 60, AmountFen: 600, Label: "60 diamonds"}}, true},
		{strings.Repeat("p", 41) + ":60:600", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.packages, func(t *testing.T) {
			c := valid()
			c.Packages = tc.packages
			list, err := c.PackageList()
			verr := c.Validate()
			if tc.ok {
				require.NoError(t, err)
				require.NoError(t, verr)
				require.Equal(t, tc.want, list)
				return
			}
			require.Error(t, err, "parsed as %+v", list)
			require.ErrorContains(t, verr, "PACKAGES", "invalid configuration fails at start naming the variable")
		})
	}
}

// TestNumbersStrict: the other numeric settings are parsed whole by the env
// library (strconv, time.ParseDuration), so the same slips fail at start
// naming the variable rather than being truncated.
func TestNumbersStrict(t *testing.T) {
	tests := []struct{ name, value string }{
		{"RECHARGE_MIN_FEN", "1.00"},
		{"RECHARGE_MAX_FEN", "5000000abc"},
		{"MONTHLY_PAY_MAX_FEN", "2000.00"},
		{"REVIEW_THRESHOLD_FEN", "1000.00"},
		{"DIAMONDS_PER_YUAN", "10 "},
		{"DB_MAX_CONNS", "32x"},
		{"RATE_LIMIT_RECHARGE_PER_MIN", "20.5"},
		{"RISK_BURST_COUNT", "3a"},
		{"RISK_UNUSUAL_MIN_FEN", "500.00"},
		{"ORDER_TTL", "15"},
		{"FAST_REFUND_WINDOW", "24hours"},
		{"RISK_DUPLICATE_WINDOW", "10 m"},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/diamondd")
			t.Setenv("JWT_SECRET", "config-test-secret-0123")
			_, err := config.Load()
			require.NoError(t, err, "the baseline loads")
			t.Setenv(tc.name, tc.value)
			_, err = config.Load()
			require.ErrorContains(t, err, tc.name)
		})
	}
}

// 0 turns a risk rule off; a negative value is refused rather than doing
// the same silently.
func TestRiskThresholds(t *testing.T) {
	for _, name := range []string{"RISK_DUPLICATE_WINDOW", "RISK_BURST_WINDOW", "RISK_BURST_COUNT",
		"RISK_UNUSUAL_MULTIPLE", "RISK_UNUSUAL_MIN_FEN", "RISK_FIRST_RECHARGE_MIN_FEN"} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/diamondd")
			t.Setenv("JWT_SECRET", "config-test-secret-0123")
			value := "-3"
			if strings.HasSuffix(name, "_WINDOW") {
				value = "-1m"
			}
			t.Setenv(name, "0")
			_, err := config.Load()
			require.NoError(t, err, "0 is off")
			t.Setenv(name, value)
			_, err = config.Load()
			require.ErrorContains(t, err, name)
		})
	}
}

// Lists read from the environment are trimmed around their commas.
func TestChannelListsTrimmed(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/diamondd")
	t.Setenv("JWT_SECRET", "config-test-secret-0123")
	t.Setenv("SANDBOX_WEBHOOK_SECRET", "sandbox-test-secret")
	t.Setenv("CHANNELS", "sandbox, monthly_pay")
	t.Setenv("CHANNELS_MAINTENANCE", " monthly_pay")
	c, err := config.Load()
	require.NoError(t, err)
	require.Equal(t, []string{"sandbox", "monthly_pay"}, c.ChannelList())
	require.Equal(t, []string{"monthly_pay"}, c.ChannelsMaintenance)
}

// A notify URL that is not an absolute http(s) URL is refused under its
// own variable's name.
func TestNotifyURLs(t *testing.T) {
	for _, name := range []string{"PUBLIC_BASE_URL", "ALIPAY_NOTIFY_URL", "WECHATPAY_NOTIFY_URL"} {
		for _, bad := range []string{"diamondd.example.com", "ftp://diamondd.example.com", "https://"} {
			t.Run(name+"="+bad, func(t *testing.T) {
				t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/diamondd")
				t.Setenv("JWT_SECRET", "config-test-secret-0123")
				t.Setenv(name, "https://diamondd.example.com")
				_, err := config.Load()
				require.NoError(t, err)
				t.Setenv(name, bad)
				_, err = config.Load()
				require.ErrorContains(t, err, name)
			})
		}
	}
}

func TestSandboxSecretLength(t *testing.T) {
	c := valid()
	c.SandboxWebhookSecret = "short"
	require.ErrorContains(t, c.Validate(), "SANDBOX_WEBHOOK_SECRET must be at least 16")
	c.SandboxWebhookSecret = "sixteen-chars-ok"
	require.NoError(t, c.Validate())
}
