package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Every numeric and duration variable carries its bounds in a range tag,
// read both by CheckBounds and by Usage (-h), so that each bound is written
// once:
//
//	range:"1..3650"     an integer from 1 to 3650, both included
//	range:"10ms..1m"    a duration (time.ParseDuration syntax)
//	range:"0.01..1"     a float
//	range:"1|3|5"       one of these integers
//
// An optional unit tag ("days") follows the numbers in messages.

// durationType is the type of time.Duration fields.
var durationType = reflect.TypeFor[time.Duration]()

// bounds is a parsed range tag.
type bounds struct {
	lo, hi   int64   // integers; durations in nanoseconds
	flo, fhi float64 // floats
	set      []int64 // one of these, instead of lo..hi
	loS, hiS string  // as written in the tag
}

// CheckBounds checks every variable of spec (a pointer to a struct with
// envconfig tags, embedded structs included) that has a range tag, and
// returns one error per variable out of bounds, naming the variable and the
// allowed range. A range tag on a variable that is not numeric, or one that
// does not parse, is an error too.
func CheckBounds(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("check bounds: %T is not a pointer to a struct", spec)
	}
	var errs []error
	for _, f := range fields(v.Elem().Type()) {
		if _, has := f.Tag.Lookup("range"); !has {
			continue
		}
		errs = append(errs, checkField(f, v.Elem().FieldByIndex(f.Index)))
	}
	return errors.Join(errs...)
}

// checkField checks one field's value against its range tag.
func checkField(f reflect.StructField, v reflect.Value) error {
	name := f.Tag.Get("envconfig")
	b, err := parseBounds(f)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var in bool
	var got string
	switch {
	case f.Type == durationType:
		got = time.Duration(v.Int()).String()
		in = b.lo <= v.Int() && v.Int() <= b.hi
	case v.CanInt():
		got = strconv.FormatInt(v.Int(), 10)
		in = b.lo <= v.Int() && v.Int() <= b.hi
		if b.set != nil {
			in = slices.Contains(b.set, v.Int())
		}
	case v.CanUint():
		got = strconv.FormatUint(v.Uint(), 10)
		in = v.Uint() <= math.MaxInt64 && b.lo <= int64(v.Uint()) && int64(v.Uint()) <= b.hi
		if b.set != nil {
			in = v.Uint() <= math.MaxInt64 && slices.Contains(b.set, int64(v.Uint()))
		}
	case v.CanFloat():
		got = strconv.FormatFloat(v.Float(), 'g', -1, 64)
		in = b.flo <= v.Float() && v.Float() <= b.fhi // false for NaN
	}
	switch {
	case in:
		return nil
	case b.set != nil:
		return fmt.Errorf("%s must be %s, got %s", name, b.describe(f), got)
	default:
		return fmt.Errorf("%s must be between %s, got %s", name, b.describe(f), got)
	}
}

// parseBounds reads the range tag of f.
func parseBounds(f reflect.StructField) (bounds, error) {
	tag := f.Tag.Get("range")
	bad := func(err error) (bounds, error) {
		return bounds{}, fmt.Errorf("bad range tag %q on %s %s: %w", tag, f.Name, f.Type, err)
	}
	numeric := f.Type == durationType
	switch f.Type.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		numeric = true
	}
	if !numeric {
		return bad(errors.New("not a number or a duration"))
	}
	if strings.Contains(tag, "|") {
		if f.Type == durationType || f.Type.Kind() == reflect.Float32 || f.Type.Kind() == reflect.Float64 {
			return bad(errors.New("a set of values is for integers only"))
		}
		b := bounds{}
		for s := range strings.SplitSeq(tag, "|") {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return bad(err)
			}
			b.set = append(b.set, n)
		}
		return b, nil
	}
	loS, hiS, ok := strings.Cut(tag, "..")
	if !ok {
		return bad(errors.New(`want "MIN..MAX" or "A|B|C"`))
	}
	b := bounds{loS: loS, hiS: hiS}
	var errLo, errHi error
	switch {
	case f.Type == durationType:
		var lo, hi time.Duration
		lo, errLo = time.ParseDuration(loS)
		hi, errHi = time.ParseDuration(hiS)
		b.lo, b.hi = int64(lo), int64(hi)
	case f.Type.Kind() == reflect.Float32 || f.Type.Kind() == reflect.Float64:
		b.flo, errLo = strconv.ParseFloat(loS, 64)
		b.fhi, errHi = strconv.ParseFloat(hiS, 64)
	default:
		b.lo, errLo = strconv.ParseInt(loS, 10, 64)
		b.hi, errHi = strconv.ParseInt(hiS, 10, 64)
	}
	if err := errors.Join(errLo, errHi); err != nil {
		return bad(err)
	}
	if b.lo > b.hi || b.flo > b.fhi {
		return bad(errors.New("minimum above maximum"))
	}
	return b, nil
}

// describe says what values are allowed: "1 and 3650 days" (after
// "between"), or "1, 3 or 5".
func (b bounds) describe(f reflect.StructField) string {
	unit := ""
	if u := f.Tag.Get("unit"); u != "" {
		unit = " " + u
	}
	if b.set != nil {
		s := make([]string, len(b.set))
		for i, n := range b.set {
			s[i] = strconv.FormatInt(n, 10)
		}
		if len(s) == 1 {
			return s[0] + unit
		}
		return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1] + unit
	}
	return b.loS + " and " + b.hiS + unit
}

// rangeText is the range of f as Usage prints it ("" when f has none).
func rangeText(f reflect.StructField) string {
	if _, has := f.Tag.Lookup("range"); !has {
		return ""
	}
	b, err := parseBounds(f)
	if err != nil {
		return "range: " + err.Error()
	}
	if b.set != nil {
		return "one of " + b.describe(f)
	}
	unit := ""
	if u := f.Tag.Get("unit"); u != "" {
		unit = " " + u
	}
	return "range " + b.loS + ".." + b.hiS + unit
}
