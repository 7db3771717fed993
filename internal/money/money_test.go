package money

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseYuan(t *testing.T) {
	valid := []struct {
		in   string
		want int64
	}{
		{"6.00", 600},
		{"6", 600},
		{"6.5", 650},
		{"6.05", 605},
		{"0.01", 1},
		{"0.1", 10},
		{"0", 0},
		{"0.00", 0},
		{"2.00", 200},
		{"100000000.00", 10_000_000_000},
		{"92233720368547758.07", math.MaxInt64},
	}
	for _, tc := range valid {
		got, err := ParseYuan(tc.in)
		if err != nil {
			t.Errorf("ParseYuan(%q): unexpected error %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseYuan(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}

	invalid := []string{
		"", " ", "6.001", "-1", "-0.01", "+1", "1e2", "1E2", "6e0", ".5", "5.",
		" 6.00", "6.00 ", "6 .00", "\t6", "6\n", "06", "00.01", "6,00", "1,000.00",
		"6..0", "6.0.0", "0x10", "６", "6.0a", "NaN", "Inf", "½",
		"92233720368547758.08", "92233720368547759", "99999999999999999999", "18446744073709551616",
	}
	for _, in := range invalid {
		got, err := ParseYuan(in)
		if err == nil {
			t.Errorf("ParseYuan(%q) = %d, want an error", in, got)
			continue
		}
		if !errors.Is(err, ErrInvalidYuan) {
			t.Errorf("ParseYuan(%q) error %v does not wrap ErrInvalidYuan", in, err)
		}
	}
}

func TestFormatFen(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{600, "6.00"},
		{650, "6.50"},
		{605, "6.05"},
		{1, "0.01"},
		{10, "0.10"},
		{0, "0.00"},
		{10_000_000_000, "100000000.00"},
		{math.MaxInt64, "92233720368547758.07"},
		{-250, "-2.50"},
		{-1, "-0.01"},
		{math.MinInt64, "-92233720368547758.08"},
	}
	for _, tc := range cases {
		if got := FormatFen(tc.in); got != tc.want {
			t.Errorf("FormatFen(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseYuan(f *testing.F) {
	for _, s := range []string{"6.00", "6", "6.5", "0.01", "6.001", "-1", "+1", "1e2", ".5", "5.", " 6", "", "92233720368547758.07", "92233720368547758.08", "06"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseYuan(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidYuan) {
				t.Fatalf("ParseYuan(%q): error %v does not wrap ErrInvalidYuan", s, err)
			}
			return
		}
		if v < 0 {
			t.Fatalf("ParseYuan(%q) = %d: negative", s, v)
		}
		formatted := FormatFen(v)
		back, err := ParseYuan(formatted)
		if err != nil || back != v {
			t.Fatalf("round trip of %q: FormatFen(%d) = %q parses to %d, %v", s, v, formatted, back, err)
		}
		// An input already in canonical two-decimal form must come back unchanged.
		if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i == 3 && formatted != s {
			t.Fatalf("FormatFen(ParseYuan(%q)) = %q", s, formatted)
		}
	})
}

func FuzzFormatFen(f *testing.F) {
	for _, v := range []int64{0, 1, 99, 100, 600, math.MaxInt64, -1, math.MinInt64} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v int64) {
		s := FormatFen(v)
		if v < 0 {
			if !strings.HasPrefix(s, "-") {
				t.Fatalf("FormatFen(%d) = %q: no sign", v, s)
			}
			return
		}
		back, err := ParseYuan(s)
		if err != nil || back != v {
			t.Fatalf("ParseYuan(FormatFen(%d) = %q) = %d, %v", v, s, back, err)
		}
	})
}
