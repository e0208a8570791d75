package bastion

// Test hooks, compiled only into this package's tests.

// ConnectCount returns how many SSH connections the dialer has established.
func (d *Dialer) ConnectCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connects
}

// HasClient reports whether the dialer currently holds an SSH connection.
func (d *Dialer) HasClient() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sess != nil
}

// KeepaliveFailures returns how many connections were dropped because a
// keepalive failed or went unanswered.
func (d *Dialer) KeepaliveFailures() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keepaliveFailures
}

// HostKeyAlgorithms returns the host key algorithms derived from known_hosts
// when it was last read.
func (d *Dialer) HostKeyAlgorithms() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hostKeyAlgorithms
}
