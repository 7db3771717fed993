//go:build !linux

package redistest

import "syscall"

// sysProcAttr: only Linux has a parent-death signal; elsewhere rely on Main
// and t.Cleanup to stop the servers.
func sysProcAttr() *syscall.SysProcAttr { return nil }
