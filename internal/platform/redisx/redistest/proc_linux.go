package redistest

import "syscall"

// sysProcAttr kills redis-server when the test binary dies without running
// its clean-ups (a panic, a timeout, go test -failfast, a missing TestMain).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
