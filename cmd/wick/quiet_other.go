//go:build !(linux || darwin || freebsd)

package main

import "os"

// silenceStderr leaves stderr as it is where file descriptors cannot be
// redirected.
func silenceStderr() (real *os.File, restore func()) { return os.Stderr, func() {} }
