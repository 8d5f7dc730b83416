package sqltest

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts the server in a process group of its own and kills it
// if the test process dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalGroup(cmd *exec.Cmd, how string) error {
	sig := syscall.SIGTERM
	if how == "int" {
		sig = syscall.SIGINT
	}
	if how == "kill" {
		sig = syscall.SIGKILL
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}
