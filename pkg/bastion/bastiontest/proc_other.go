//go:build !linux

package bastiontest

import (
	"errors"
	"syscall"
	"time"
)

// sysSignal is a signal sent to sshd processes.
type sysSignal int

const (
	sigStop sysSignal = iota
	sigCont
	sigKill
)

var errUnsupported = errors.New("bastiontest: process control is only implemented on Linux")

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signal(int, sysSignal) error { return errUnsupported }

func descendants(int) []int { return nil }

func waitGone([]int, time.Duration) {}
