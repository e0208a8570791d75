package bastion

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// loadSigner reads and parses the private key in path. Its errors never
// contain the key or the passphrase.
func loadSigner(path, passphrase string) (ssh.Signer, error) {
	if path == "" {
		return nil, errors.New("bastion: no private key file configured (PEM_FILE_LOCATION)")
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bastion: reading private key file (PEM_FILE_LOCATION): %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passphrase == "" {
			return nil, fmt.Errorf("bastion: private key %s is encrypted but no passphrase is configured (BASTION_KEY_PASSPHRASE)", path)
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(pemBytes, []byte(passphrase))
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("bastion: private key %s: wrong passphrase (BASTION_KEY_PASSPHRASE)", path)
		}
	}
	if err != nil {
		// The x/crypto and x509 parse errors describe the format problem
		// (PEM block type, ASN.1 structure) and do not echo the input.
		return nil, fmt.Errorf("bastion: private key %s (PEM_FILE_LOCATION) is not a usable ed25519, RSA or ECDSA key in OpenSSH or PEM format: %s",
			path, redact(err.Error(), passphrase))
	}
	return signer, nil
}

// redact removes secret from msg, as a last line of defence.
func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "[REDACTED]")
}

// loadKnownHosts reads the known_hosts file and returns the host key callback
// together with the host key algorithms matching the keys it lists for
// hostport (nil when it lists none, leaving the library defaults). Its error
// names the file (a known_hosts file holds only public keys).
func loadKnownHosts(path, hostport string) (ssh.HostKeyCallback, []string, error) {
	callback, err := knownhosts.New(path)
	if err != nil {
		return nil, nil, err
	}
	return callback, hostKeyAlgorithms(callback, hostport), nil
}

// hostKeyAlgorithms lists the host key algorithms for the keys the
// known_hosts callback knows for hostport, in file order. Without it the SSH
// library may negotiate, say, an ECDSA host key while known_hosts only lists
// the bastion's ed25519 key, and verification would fail.
func hostKeyAlgorithms(callback ssh.HostKeyCallback, hostport string) []string {
	// Probe with a key that cannot be in the file: the KeyError lists the
	// keys known for the host.
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	if !errors.As(callback(hostport, &net.TCPAddr{IP: net.IPv4zero}, probe), &keyErr) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range keyErr.Want {
		for _, algo := range algorithmsForKeyType(k.Key.Type()) {
			if !seen[algo] {
				seen[algo] = true
				algos = append(algos, algo)
			}
		}
	}
	return algos
}

// algorithmsForKeyType maps a public key type to the host key algorithms
// that use it. As in OpenSSH, an RSA key is only accepted with SHA-2
// signatures.
func algorithmsForKeyType(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	default:
		return []string{keyType}
	}
}

// hostKeyError reports a failed host key verification. It wraps both
// ErrHostKey and the knownhosts error.
type hostKeyError struct {
	hostport       string
	knownHostsFile string
	presented      ssh.PublicKey
	cause          error
}

func (e *hostKeyError) Error() string {
	presented := e.presented.Type() + " " + ssh.FingerprintSHA256(e.presented)
	var detail string
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.As(e.cause, &keyErr) && len(keyErr.Want) == 0:
		detail = fmt.Sprintf("the host is not in known_hosts file %s (BASTION_KNOWN_HOSTS); it presented %s", e.knownHostsFile, presented)
	case errors.As(e.cause, &keyErr):
		detail = fmt.Sprintf("the host key CHANGED: it presented %s, which does not match the key(s) in %s (BASTION_KNOWN_HOSTS); this may be a man-in-the-middle attack or a rebuilt bastion", presented, e.knownHostsFile)
	case errors.As(e.cause, &revoked):
		detail = fmt.Sprintf("the host key %s is marked @revoked in %s", presented, e.knownHostsFile)
	default:
		detail = fmt.Sprintf("%v (presented %s, known_hosts %s)", e.cause, presented, e.knownHostsFile)
	}
	return fmt.Sprintf("%v for %s: %s", ErrHostKey, e.hostport, detail)
}

func (e *hostKeyError) Unwrap() []error { return []error{ErrHostKey, e.cause} }

// hostKeyChecker wraps the known_hosts callback so that any rejection is a
// *hostKeyError.
func (d *Dialer) hostKeyChecker(known ssh.HostKeyCallback) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if err := known(hostname, remote, key); err != nil {
			return &hostKeyError{hostport: d.hostport, knownHostsFile: d.knownHostsFile, presented: key, cause: err}
		}
		return nil
	}
}
