package redminetest

import "syscall"

// sysProcAttr puts Ruby in a process group of its own (Stop kills the
// group: rails may fork) and kills it if the test process dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
