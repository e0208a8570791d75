package ctl

import (
	"bufio"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// docExample is a tenantctl command line in a fenced block of a document.
type docExample struct {
	file string
	line int
	args []string
}

// docExamples returns the tenantctl command lines of the fenced code blocks
// of path: lines starting with tenantctl, bin/tenantctl or "$ tenantctl",
// without their trailing comment.
func docExamples(t *testing.T, path string) []docExample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docExample
	fenced := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			continue
		}
		line = strings.TrimPrefix(line, "$ ")
		line = strings.TrimPrefix(line, "bin/")
		if !strings.HasPrefix(line, "tenantctl ") && line != "tenantctl" {
			continue
		}
		args, err := shellWords(line)
		if err != nil {
			t.Errorf("%s:%d: %v: %s", path, n, err, line)
			continue
		}
		out = append(out, docExample{file: path, line: n, args: args[1:]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// shellWords splits a command line as sh would (quotes, no expansion),
// stopping at a comment.
func shellWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote rune
	)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '#' && !in:
			return words, nil
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, io.ErrUnexpectedEOF
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// Every tenantctl example of the README and docs/tenantctl.md names a
// command that exists, with flags it has and arguments it accepts, and tenant
// ids that are valid (not abbreviated): it runs as written. What each prints
// is checked by the command's own tests.
func TestDocExamplesRunAsWritten(t *testing.T) {
	var examples []docExample
	for _, path := range []string{"../../README.md", "../../docs/tenantctl.md", "../../docs/operations.md", "../../docs/deployment.md"} {
		examples = append(examples, docExamples(t, path)...)
	}
	if len(examples) < 20 {
		t.Fatalf("only %d tenantctl examples found in the documents", len(examples))
	}
	for _, ex := range examples {
		if problem := checkExample(ex.args); problem != "" {
			t.Errorf("%s:%d: tenantctl %s: %s", ex.file, ex.line, strings.Join(ex.args, " "), problem)
		}
	}
}

// checkExample parses args as tenantctl would and returns what is wrong
// ("" if nothing).
func checkExample(args []string) string {
	c := &CLI{Stdout: io.Discard, Stderr: io.Discard}
	root := c.newRoot()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err.Error()
	}
	if cmd == root && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		return "no command " + rest[0]
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err.Error()
	}
	positional := cmd.Flags().Args()
	if err := cmd.ValidateArgs(positional); err != nil {
		return err.Error()
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return err.Error()
	}
	for _, a := range positional {
		if strings.HasPrefix(a, "tenant_") {
			if _, err := tenant.ParseID(a); err != nil {
				return err.Error()
			}
		}
	}
	return ""
}

// The check itself refuses what would not run.
func TestDocExampleCheckRefuses(t *testing.T) {
	for _, line := range []string{
		"tenantctl ledger --json-lines",
		"tenantctl cleanp " + exampleID,
		"tenantctl cleanup --wait tenant_d0000001-…-0001",
		"tenantctl status -o yaml --bogus",
		"tenantctl hold " + exampleID + " --reasn x",
	} {
		args, err := shellWords(line)
		if err != nil {
			t.Fatal(err)
		}
		if checkExample(args[1:]) == "" {
			t.Errorf("%s: accepted", line)
		}
	}
	args, _ := shellWords(`tenantctl hold ` + exampleID + ` --reason "legal review (OPS-1234)" --until 2026-12-31  # a comment`)
	if p := checkExample(args[1:]); p != "" || len(args) != 7 {
		t.Errorf("a valid example: %q, %v", p, args)
	}
}

// Every key of verify -o json (the json tags of verifyView and of the view
// types it holds, at any depth) and every column of verify -o csv is named,
// in backquotes, in the verify section of docs/tenantctl.md: a field added to
// the output without its line in the document fails here.
func TestDocVerifyOutputFields(t *testing.T) {
	b, err := os.ReadFile("../../docs/tenantctl.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## verify\n")
	if start < 0 {
		t.Fatal("docs/tenantctl.md has no verify section")
	}
	section := doc[start+1:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	keys := jsonKeys(reflect.TypeOf(verifyView{}), map[reflect.Type]bool{})
	if len(keys) < 30 {
		t.Fatalf("only %d json keys found in verifyView: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(section, "`"+k+"`") {
			t.Errorf("verify -o json key %q is not documented in the verify section of docs/tenantctl.md", k)
		}
	}
	if header := strings.Join(verifyCSVHeader, ","); !strings.Contains(section, "`"+header+"`") {
		t.Errorf("verify -o csv header %q is not in the verify section of docs/tenantctl.md", header)
	}
}

// jsonKeys returns the json keys of the struct fields of t and of the
// structs of this package that t holds (through pointers, slices, arrays and
// maps), each as a type's fields are visited.
func jsonKeys(t reflect.Type, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(verifyView{}).PkgPath() || seen[t] {
		return nil
	}
	seen[t] = true
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
			continue
		case name == "" && f.Anonymous: // its fields are the parent's
			keys = append(keys, jsonKeys(f.Type, seen)...)
			continue
		case name == "":
			name = f.Name
		}
		keys = append(keys, name)
		keys = append(keys, jsonKeys(f.Type, seen)...)
	}
	return keys
}
