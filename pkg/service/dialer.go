package service

import (
	"errors"
	"log/slog"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
)

// ControlPlaneDialer returns the dialer control-plane connections go
// through: nil (direct) without BASTION_HOST.
func ControlPlaneDialer(cfg *config.Common, log *slog.Logger) (controlplane.DialFunc, func(), error) {
	if cfg.BastionHost == "" {
		return nil, func() {}, nil
	}
	return nil, nil, errors.New("BASTION_HOST: the SSH bastion is not wired in yet")
}
