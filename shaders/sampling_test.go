//go:build !js && !wasip1

package shaders

import "testing"

// TestSamplingCompiles builds the sampling kernel on the device: its
// parity with engine/sample is tested where it is driven, in
// engine/webgpu (TestSampleMatchesSampler), next to its params struct.
func TestSamplingCompiles(t *testing.T) {
	for _, wg := range []int{64, 256} {
		k := Key{Family: "sampling", Entry: "sample", WG: wg}
		kern, err := Compile(device(t), k)
		if err != nil {
			t.Fatalf("%s: %v", k.Label(), err)
		}
		device(t).FreeKernel(kern)
	}
}
