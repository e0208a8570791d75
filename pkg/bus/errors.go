package bus

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// unavailable marks errors that mean JetStream could not be reached (a
// restart, a lost leader, a network cut) as tenant.ErrUnavailable, so that
// the work is retried rather than counted as a failure of the message.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	for _, target := range []error{nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, nats.ErrConnectionDraining,
		jetstream.ErrNoStreamResponse, jetstream.ErrServerShutdown, jetstream.ErrJetStreamNotEnabled,
		context.DeadlineExceeded} {
		if errors.Is(err, target) {
			return tenant.Unavailable(err)
		}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 { // no quorum, no leader, JetStream temporarily off
		return tenant.Unavailable(err)
	}
	return err
}

// missing reports whether err says that a stream, bucket or consumer is gone:
// a publish no stream stored, a direct get nobody answered (a deleted
// bucket), or the API's "not found". JetStream restarted on an empty store,
// or an operator deleted it.
func missing(err error) bool {
	for _, target := range []error{jetstream.ErrNoStreamResponse, nats.ErrNoResponders, jetstream.ErrStreamNotFound,
		jetstream.ErrConsumerNotFound, jetstream.ErrBucketNotFound,
		nats.ErrStreamNotFound, nats.ErrConsumerNotFound, nats.ErrBucketNotFound} { // KV watches use the older API
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
