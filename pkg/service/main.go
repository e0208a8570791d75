package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
)

// Program is the whole of the named service's main (analyzer, marker or
// cleaner): its summary, its flags and its run, through Main.
func Program(name string, args []string) int {
	main, ok := programs[name]
	if !ok {
		panic("service: no program " + name)
	}
	return main(args)
}

// programs are the three services' mains by name.
var programs = map[string]func(args []string) int{
	"analyzer": func(args []string) int {
		var (
			cfg  config.Analyzer
			once bool
		)
		return Main("analyzer", "publishes gated, inactive tenants as cleanup candidates", args, &cfg,
			func(fs *flag.FlagSet) { fs.BoolVar(&once, "once", false, "run a single analysis pass and exit") },
			func(ctx context.Context, log *slog.Logger) error { return RunAnalyzer(ctx, &cfg, once, os.Stdout, log) })
	},
	"marker": func(args []string) int {
		var cfg config.Marker
		return Main("marker", "marks cleanup candidates and schedules their drain checks", args, &cfg, nil,
			func(ctx context.Context, log *slog.Logger) error { return RunMarker(ctx, &cfg, log) })
	},
	"cleaner": func(args []string) int {
		var cfg config.Cleaner
		return Main("cleaner", "checks drained tenants and cleans them up", args, &cfg, nil,
			func(ctx context.Context, log *slog.Logger) error { return RunCleaner(ctx, &cfg, log) })
	},
}

// Main is the whole of a service's main: it parses args (-h prints the
// summary, the flags and the configuration; --version the version and
// commit stamped at build time), loads spec from the
// environment, and runs run with a JSON logger until SIGTERM or SIGINT. It
// returns the exit status: 0 after a clean stop, 1 when run fails, 2 for bad
// flags or configuration.
func Main(name, summary string, args []string, spec interface{ Level() string },
	define func(*flag.FlagSet), run func(ctx context.Context, log *slog.Logger) error) int {
	var version bool
	withVersion := func(fs *flag.FlagSet) {
		fs.BoolVar(&version, "version", false, "print the version and commit and exit")
		if define != nil {
			define(fs)
		}
	}
	if _, err := Flags(name, summary, spec, args, os.Stdout, withVersion); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if version {
		fmt.Println(buildinfo.String(name))
		return 0
	}
	if err := config.Load(spec); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	log := Logger(name, spec.Level())
	ctx, stop := SignalContext()
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error(name+" failed", "error", err)
		return 1
	}
	return 0
}
