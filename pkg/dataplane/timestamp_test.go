package dataplane

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// TestBinaryTimestamptzBoundaries: every finite timestamptz PostgreSQL can
// hold (4714 BC to 294276 AD) decodes exactly, to the microsecond, on both
// sides of 2000; 'infinity' is after all of them and '-infinity' before.
func TestBinaryTimestamptzBoundaries(t *testing.T) {
	enc := func(us int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(us)) }
	const (
		minTimestamp = -211813488000000000 // PostgreSQL's MIN_TIMESTAMP: 4714-11-24 00:00:00 BC
		endTimestamp = 9223371331200000000 // PostgreSQL's END_TIMESTAMP: 294277-01-01 00:00:00
	)
	for us, want := range map[int64]time.Time{
		0:            time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		1:            time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC),
		-1:           time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		-1_500_000:   time.Date(1999, 12, 31, 23, 59, 58, 500000000, time.UTC),
		minTimestamp: time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC),
		// past where microseconds since 1970 overflow an int64
		endTimestamp - 1: time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
	} {
		if got := binaryTimestamptz(enc(us)); !got.Equal(want) {
			t.Errorf("%d µs since 2000: %s, want %s", us, got, want)
		}
	}
	inf, negInf := binaryTimestamptz(enc(math.MaxInt64)), binaryTimestamptz(enc(math.MinInt64))
	if !inf.After(time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC)) {
		t.Errorf("infinity: %s, want after every finite time", inf)
	}
	if !negInf.Before(time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("-infinity: %s, want before every finite time", negInf)
	}
	if !binaryTimestamptz(nil).IsZero() {
		t.Error("NULL is not the zero time")
	}
}
