//go:build !linux

package redminetest

import "syscall"

// sysProcAttr puts Ruby in a process group of its own (Stop kills the group).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
