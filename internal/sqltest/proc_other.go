//go:build !linux

package sqltest

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts the server in a process group of its own.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signalGroup(cmd *exec.Cmd, how string) error {
	sig := syscall.SIGTERM
	switch how {
	case "int":
		sig = syscall.SIGINT
	case "kill":
		sig = syscall.SIGKILL
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}
