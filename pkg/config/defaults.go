package config

import (
	"fmt"
	"reflect"
	"strconv"
	"time"
)

// Defaults sets every field of spec (a pointer to one of the structs above,
// or any struct with envconfig tags) that has a default tag to that default,
// as Load does for a variable that is not set, without reading the
// environment. Callers that build a configuration in code (tests, the demo)
// start from Defaults, set the fields they need and call Validate.
func Defaults(spec any) {
	v := reflect.ValueOf(spec).Elem()
	for _, f := range fields(v.Type()) {
		def, ok := f.Tag.Lookup("default")
		if !ok {
			continue
		}
		if err := setText(v.FieldByIndex(f.Index), def); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", f.Tag.Get("envconfig"), err))
		}
	}
}

// Environ is spec as environment variables (NAME=value, every variable spec
// reads), for a process that loads the same configuration with Load.
func Environ(spec any) []string {
	v := reflect.ValueOf(spec).Elem()
	var env []string
	for _, f := range fields(v.Type()) {
		env = append(env, f.Tag.Get("envconfig")+"="+text(v.FieldByIndex(f.Index)))
	}
	return env
}

// setText parses s into v the way envconfig does for the kinds of fields
// the configuration has.
func setText(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		v.SetInt(int64(d))
		return err
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		v.SetBool(b)
		return err
	case v.CanInt():
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		v.SetInt(n)
		return err
	case v.CanUint():
		n, err := strconv.ParseUint(s, 0, v.Type().Bits())
		v.SetUint(n)
		return err
	case v.CanFloat():
		n, err := strconv.ParseFloat(s, v.Type().Bits())
		v.SetFloat(n)
		return err
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// text formats v so that setText (and envconfig) read it back.
func text(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.CanFloat():
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	default:
		return fmt.Sprint(v.Interface())
	}
}
