//go:build linux || darwin || freebsd

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// silenceStderr points file descriptor 2 at /dev/null until the returned
// function is called, and returns a file for the real stderr meanwhile. The
// GPU libraries (wgpu-native, Mesa's Vulkan drivers) print warnings to fd 2
// from C while an adapter is found, which os.Stderr cannot intercept. When
// anything fails, stderr is left as it is.
func silenceStderr() (real *os.File, restore func()) {
	saved, err := unix.Dup(2)
	if err != nil {
		return os.Stderr, func() {}
	}
	null, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(saved)
		return os.Stderr, func() {}
	}
	defer unix.Close(null)
	if err := unix.Dup2(null, 2); err != nil {
		unix.Close(saved)
		return os.Stderr, func() {}
	}
	real = os.NewFile(uintptr(saved), "stderr")
	return real, func() {
		unix.Dup2(saved, 2)
		real.Close()
	}
}
