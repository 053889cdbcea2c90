//go:build !js && !wasip1

// Package gputest lists the GPU devices that tests of wick's kernels run
// on, so that every kernel is checked on each WebGPU implementation and
// tier wick ships to:
//
//   - "native": wgpu-native (engine/gpu.Open), whose old naga takes only
//     the portable kernels;
//   - "dawn": Dawn, Chrome's WebGPU and its Tint compiler
//     (engine/gpu/dawn), with every optional feature the kernels can use
//     (on lavapipe: subgroups of size 8, packed int8 dot products);
//   - "dawn-fallback": Dawn with every optional feature withheld, as a
//     browser without them runs the portable kernels.
//
// With WICK_DAWN_EXPERIMENTAL=1 in the environment, "dawn" also gets the
// adapter's chromium-experimental-* features (dawn.Options.Experimental),
// as Chrome with its unsafe-WebGPU flag: subgroup matrices where the GPU
// has them (not lavapipe), so the kernels of that tier are tested there.
//
// Each device is opened once per test binary and shared by its tests;
// the process's exit ends Dawn's Node processes. A device that cannot be
// opened fails the test with what to install (`make deps`): a GPU test
// must never pass for want of a device.
package gputest

import (
	"os"
	"sync"
	"testing"

	"github.com/wick-run/wick/engine/gpu"
	"github.com/wick-run/wick/engine/gpu/dawn"
)

// Device is one device tests run on.
type Device struct {
	// Name names the device in subtests: "native", "dawn" or
	// "dawn-fallback".
	Name string
	// Dawn is true for the devices on Dawn.
	Dawn bool
	open func() (gpu.Device, error)
	hint string

	once sync.Once
	dev  gpu.Device
	err  error
}

var (
	native = &Device{Name: "native", open: func() (gpu.Device, error) { return gpu.Open(gpu.Options{}) },
		hint: "install mesa-vulkan-drivers and libvulkan1: `make deps` does"}
	dawnAll = &Device{Name: "dawn", Dawn: true, open: func() (gpu.Device, error) {
		return dawn.Open(dawn.Options{Tier: dawn.TierAll, Experimental: os.Getenv("WICK_DAWN_EXPERIMENTAL") == "1"})
	},
		hint: "Dawn needs node, node/node_modules and lavapipe 25 (Mesa from bookworm-backports): `make deps` installs them"}
	dawnFallback = &Device{Name: "dawn-fallback", Dawn: true, open: func() (gpu.Device, error) { return dawn.Open(dawn.Options{Tier: dawn.TierFallback}) },
		hint: dawnAll.hint}
)

// Devices returns every device a kernel test runs on: native, dawn,
// dawn-fallback.
func Devices() []*Device { return []*Device{native, dawnAll, dawnFallback} }

// Native returns the wgpu-native device alone.
func Native() *Device { return native }

// Dawn returns the two Dawn devices: dawn and dawn-fallback.
func Dawn() []*Device { return []*Device{dawnAll, dawnFallback} }

// Open returns the device, opening it at the first call; it fails t,
// saying what to install, when the device cannot be opened.
func (d *Device) Open(t testing.TB) gpu.Device {
	t.Helper()
	d.once.Do(func() { d.dev, d.err = d.open() })
	if d.err != nil {
		t.Fatalf("GPU device %s: %v\n(%s)", d.Name, d.err, d.hint)
	}
	return d.dev
}

// Run runs f once per device of devs, each as a subtest named by the
// device.
func Run(t *testing.T, devs []*Device, f func(t *testing.T, d gpu.Device)) {
	t.Helper()
	for _, d := range devs {
		t.Run(d.Name, func(t *testing.T) { f(t, d.Open(t)) })
	}
}
