package bastion

import (
	"io"
	"net"
)

// tunnelConn is a connection through the bastion. SSH channels do not
// support deadlines, which pgx needs to cancel queries, so the channel is
// bridged to one end of an in-memory net.Pipe, which does.
type tunnelConn struct {
	net.Conn // local end of the pipe
	remote   tunnelAddr
}

// tunnelAddr is the target address as passed to DialContext. pgx dials
// RemoteAddr().String() again to send cancel requests, so it must be the
// real target, not the zero address SSH channels report.
type tunnelAddr struct {
	network, addr string
}

func (a tunnelAddr) Network() string { return a.network }
func (a tunnelAddr) String() string  { return a.addr }

// newTunnelConn bridges ch, a channel to addr, to a deadline-capable conn.
// Closing either side closes the other.
func newTunnelConn(ch net.Conn, network, addr string) net.Conn {
	local, bridge := net.Pipe()
	go func() {
		_, _ = io.Copy(bridge, ch) // target -> caller
		bridge.Close()
		ch.Close()
	}()
	go func() {
		_, _ = io.Copy(ch, bridge) // caller -> target
		ch.Close()
		bridge.Close()
	}()
	return &tunnelConn{Conn: local, remote: tunnelAddr{network: network, addr: addr}}
}

// RemoteAddr returns the target address as given to DialContext.
func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }
