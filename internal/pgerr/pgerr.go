// Package pgerr classifies PostgreSQL driver errors into the domain's error
// kinds, for the stores to return: a lock held by someone else or a
// statement that ran out of time is "later" (tenant.ErrLater), a database (or
// the bastion in front of it) that cannot be reached is "unavailable"
// (tenant.ErrUnavailable), anything else stays as it is.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Kind returns err as the domain's kind of error (nil stays nil; an error
// that already is one of the kinds is returned as it is).
func Kind(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil || errors.Is(err, tenant.ErrRefused) || errors.Is(err, tenant.ErrLater) || errors.Is(err, tenant.ErrUnavailable):
		return err
	case errors.As(err, &pgErr) && pgErr.Code == "55P03":
		return tenant.Later(15*time.Second, "a lock is held by someone else", err)
	case errors.As(err, &pgErr) && pgErr.Code == "57014":
		return tenant.Later(15*time.Second, "a statement ran out of time", err)
	case Unavailable(err):
		return tenant.Unavailable(err)
	}
	return err
}

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
