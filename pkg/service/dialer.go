package service

import (
	"log/slog"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
)

// ControlPlaneDialer returns the dialer every control-plane connection goes
// through: the SSH bastion when BASTION_HOST is set (never a direct
// connection then), nil (direct) otherwise. The returned func closes it.
func ControlPlaneDialer(cfg *config.Common, log *slog.Logger) (controlplane.DialFunc, func(), error) {
	if cfg.BastionHost == "" {
		return nil, func() {}, nil
	}
	d, err := bastion.New(BastionConfig(cfg), log)
	if err != nil {
		return nil, nil, err
	}
	return d.DialContext, func() { _ = d.Close() }, nil
}

// BastionConfig maps the BASTION_* variables onto the dialer's settings.
func BastionConfig(cfg *config.Common) bastion.Config {
	return bastion.Config{
		Host:           cfg.BastionHost,
		Port:           cfg.BastionPort,
		User:           cfg.BastionUser,
		KeyFile:        cfg.PEMFile,
		KeyPassphrase:  cfg.BastionPassphrase,
		KnownHostsFile: cfg.BastionKnownHosts,
	}
}
