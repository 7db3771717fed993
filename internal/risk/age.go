package risk

import (
	"fmt"
	"time"
)

// AdultAge is the age of majority under PRC civil law.
const AdultAge = 18

// Age returns the completed years, on the calendar date of at, of someone
// born on birthdate (YYYY-MM-DD). The calendar date of at is taken in at's own
// location, so the caller passes at in the time zone whose law counts the age
// (Asia/Shanghai for PRC users): near midnight UTC and Beijing disagree on
// the date.
//
// A year is complete on the birthday itself. Someone born on 29 February
// completes a year on 1 March in common years, not on 28 February: the
// anniversary has not yet come, and erring late keeps the minor protection a
// day longer rather than a day shorter.
func Age(birthdate string, at time.Time) (int, error) {
	b, err := time.Parse(time.DateOnly, birthdate)
	if err != nil {
		return 0, fmt.Errorf("parse birthdate %q: %w", birthdate, err)
	}
	y, m, d := at.Date()
	if b.After(time.Date(y, m, d, 0, 0, 0, 0, time.UTC)) {
		return 0, fmt.Errorf("birthdate %s is after %s", birthdate, at.Format(time.DateOnly))
	}
	years := y - b.Year()
	// Comparing (month, day) pairs rather than adding years to b avoids
	// time.Date normalizing 29 February into 1 March of the wrong year.
	if m < b.Month() || (m == b.Month() && d < b.Day()) {
		years--
	}
	return years, nil
}

// IsMinor reports whether someone born on birthdate is under AdultAge at at
// (see Age for the calendar rules).
func IsMinor(birthdate string, at time.Time) (bool, error) {
	years, err := Age(birthdate, at)
	if err != nil {
		return false, fmt.Errorf("minor check: %w", err)
	}
	return years < AdultAge, nil
}
