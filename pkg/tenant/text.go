package tenant

import (
	"strings"
	"unicode"
)

// CleanText makes text that came from outside (who requested a cleanup, a
// hold's reason, a name typed by an operator) safe to store, log, publish
// and print: invalid UTF-8 becomes U+FFFD, control and formatting characters
// (NUL, escape sequences, bidirectional overrides, …) are dropped, runs of
// white space become one space, and the result is cut to at most maxBytes
// bytes on a character boundary.
func CleanText(s string, maxBytes int) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			continue
		}
		add := string(r)
		if space {
			add = " " + add
		}
		if b.Len()+len(add) > maxBytes {
			break
		}
		b.WriteString(add)
		space = false
	}
	return b.String()
}

// SpreadsheetSafe keeps a CSV cell from being taken for a formula by a
// spreadsheet (CSV injection): a cell starting with =, +, -, @, a tab or a
// carriage return gets a leading apostrophe.
func SpreadsheetSafe(cell string) string {
	if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return "'" + cell
	}
	return cell
}
