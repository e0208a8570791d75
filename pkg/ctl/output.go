package ctl

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Output formats of the listing commands (-o).
const (
	formatTable = "table" // aligned columns for people (the default)
	formatWide  = "wide"  // the table with every row and column
	formatJSON  = "json"  // one indented JSON document
	formatCSV   = "csv"   // a header row, then one row per item
)

var formats = []string{formatTable, formatWide, formatJSON, formatCSV}

// output is -o FORMAT and --output-file FILE: where and how a listing
// command writes its answer. Only --output-file writes a file.
type output struct {
	format string
	file   string
}

// outputFlags adds -o/--output and --output-file to cmd, with completion of
// the formats.
func outputFlags(cmd *cobra.Command, o *output) {
	cmd.Flags().StringVarP(&o.format, "output", "o", formatTable, "output format: "+strings.Join(formats, ", "))
	cmd.Flags().StringVar(&o.file, "output-file", "", "write the output to `FILE` instead of standard output")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

// check validates -o; it returns the usage error to print, or "".
func (o *output) check() string {
	if !slices.Contains(formats, o.format) {
		return fmt.Sprintf("-o %q: the formats are %s", o.format, strings.Join(formats, ", "))
	}
	return ""
}

// write calls emit with standard output, or with the file of --output-file
// (created or truncated), and then says on standard error where it went.
func (o *output) write(c *CLI, emit func(io.Writer) error) error {
	if o.file == "" {
		return emit(c.Stdout)
	}
	f, err := os.Create(o.file)
	if err != nil {
		return fmt.Errorf("write %s: %w", o.file, err)
	}
	if err := emit(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", o.file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", o.file, err)
	}
	abs, _ := filepath.Abs(o.file)
	fmt.Fprintf(c.Stderr, "wrote %s\n", abs)
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeCSV writes a header and rows.
func writeCSV(w io.Writer, header []string, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}
