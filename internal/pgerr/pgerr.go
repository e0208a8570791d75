// Package pgerr classifies PostgreSQL driver errors for the services.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
)

// Unavailable reports whether err means the database (or the bastion in
// front of it) could not be reached or went away, or the server asked the
// client to retry: nothing is wrong with the work itself, it should be
// retried once the database is back.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var (
		pgErr      *pgconn.PgError
		connectErr *pgconn.ConnectError
		netErr     net.Error
	)
	switch {
	case errors.As(err, &pgErr):
		return strings.HasPrefix(pgErr.Code, "08") || // connection exception
			pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" || // shutdown, starting up
			pgErr.Code == "53300" || // too many connections
			pgErr.Code == "40001" || pgErr.Code == "40P01" // serialization failure, deadlock: retry
	case errors.As(err, &connectErr), errors.As(err, &netErr):
		return true
	case errors.Is(err, bastion.ErrUnreachable), errors.Is(err, bastion.ErrHostKey):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// BadCredentials reports errors that waiting will not fix: authentication
// failures and a database that does not exist.
func BadCredentials(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000")
}
