package bus

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// authOptions are the NATS client options for the credentials in files:
// a credentials file (user JWT and nkey seed) or an nkey seed file. The
// client reads the files; their contents are never logged nor quoted in an
// error (the nkeys library's errors name no key material).
func authOptions(opts Options) ([]nats.Option, error) {
	var out []nats.Option
	if opts.Creds != "" {
		out = append(out, nats.UserCredentials(opts.Creds))
	}
	if opts.NkeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(opts.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", opts.NkeySeed, err)
		}
		out = append(out, o)
	}
	return out, nil
}
