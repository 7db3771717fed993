package risk_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/risk"
)

func TestAge(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, shanghai) }
	tests := []struct {
		name      string
		birthdate string
		at        time.Time
		years     int
		minor     bool
	}{
		{"18th birthday today", "2008-11-21", day(2026, 11, 21), 18, false},
		{"18th birthday tomorrow", "2008-11-22", day(2026, 11, 21), 17, true},
		{"18th birthday yesterday", "2008-11-20", day(2026, 11, 21), 18, false},
		{"birthday later in the year", "2008-12-01", day(2026, 11, 21), 17, true},
		{"born today", "2026-11-21", day(2026, 11, 21), 0, true},
		{"leap day, common year, 28 Feb", "2008-02-29", day(2026, 2, 28), 17, true},
		{"leap day, common year, 1 Mar", "2008-02-29", day(2026, 3, 1), 18, false},
		{"leap day born, 29 Feb of a later leap year", "2008-02-29", day(2028, 2, 29), 20, false},
		{"leap day born, 28 Feb of the year they turn 18", "2012-02-29", day(2030, 2, 28), 17, true},
		{"leap day born, at 28 Feb of a leap year", "2008-02-29", day(2028, 2, 28), 19, false},
		{"leap day born, turns 18 in 2026 on 1 Mar", "2008-02-29", day(2026, 3, 1), 18, false},
		{"28 Feb born, leap year", "2010-02-28", day(2028, 2, 28), 18, false},
		{"28 Feb born, day before", "2010-02-28", day(2028, 2, 27), 17, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			years, err := risk.Age(tt.birthdate, tt.at)
			require.NoError(t, err)
			assert.Equal(t, tt.years, years)
			minor, err := risk.IsMinor(tt.birthdate, tt.at)
			require.NoError(t, err)
			assert.Equal(t, tt.minor, minor)
		})
	}
}

func TestAgeUsesCalendarDateOfAtsLocation(t *testing.T) {
	// 2026-11-21 16:30 UTC is already 2026-11-22 in Shanghai.
	utc := time.Date(2026, 11, 21, 16, 30, 0, 0, time.UTC)
	shanghai := utc.In(time.FixedZone("CST", 8*3600))

	minor, err := risk.IsMinor("2008-11-22", utc)
	require.NoError(t, err)
	assert.True(t, minor)

	minor, err = risk.IsMinor("2008-11-22", shanghai)
	require.NoError(t, err)
	assert.False(t, minor)
}

func TestAgeErrors(t *testing.T) {
	at := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	for _, b := range []string{"", "2008/11/21", "2008-13-01", "21-11-2008", "2008-11-21T00:00:00Z", "2010-02-29" /* not a leap year */, "2026-11-22" /* after at */} {
		_, err := risk.Age(b, at)
		assert.Error(t, err, b)
		_, err = risk.IsMinor(b, at)
		assert.Error(t, err, b)
	}
}
