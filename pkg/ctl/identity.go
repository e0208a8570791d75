package ctl

import (
	"errors"
	"os"
	"os/user"
	"strings"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// asEnv names the operator when --as is not given.
const asEnv = "TENANTCTL_AS"

// requester names the operator in requests, holds, confirmations and so in
// the ledger: "tenantctl:" followed by --as, else $TENANTCTL_AS, else the
// OS user (os/user, then $USER) at this host. It is an error when none of
// them says who: the audit trail never reads "unknown".
func (c *CLI) requester() (string, error) {
	who := strings.TrimSpace(c.as)
	if who == "" {
		who = strings.TrimSpace(os.Getenv(asEnv))
	}
	if who == "" {
		name := ""
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		if name == "" {
			name = os.Getenv("USER")
		}
		if name == "" {
			return "", errors.New("cannot tell who you are (no OS user name, no $USER): give --as NAME or set " + asEnv)
		}
		who = name
		if host, err := os.Hostname(); err == nil && host != "" {
			who += "@" + tenant.CleanText(host, 64)
		}
	}
	who = tenant.CleanText(who, 128)
	if who == "" {
		return "", errors.New("--as or " + asEnv + " holds nothing printable: give a name")
	}
	return tenant.CleanRequester("tenantctl:" + who), nil
}
