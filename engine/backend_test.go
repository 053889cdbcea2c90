package engine

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wick-run/wick/engine/model"
)

// TestAutoBackendPrefersCPU checks that a backend may decline a choice left
// to it (ErrPreferCPU: a software GPU adapter) and that the engine then runs
// the CPU backend with a notice, while an explicit request still gets it.
func TestAutoBackendPrefersCPU(t *testing.T) {
	registryMu.Lock()
	saved, had := registry["webgpu"]
	registryMu.Unlock()
	t.Cleanup(func() {
		registryMu.Lock()
		defer registryMu.Unlock()
		if had {
			registry["webgpu"] = saved
		} else {
			delete(registry, "webgpu")
		}
	})
	var asked []bool
	Register("webgpu", func(cfg *model.Config, w *model.Weights, explicit bool) (Backend, error) {
		asked = append(asked, explicit)
		if !explicit {
			return nil, fmt.Errorf("adapter soft runs on the CPU: %w", ErrPreferCPU)
		}
		return newCPU(cfg, w) // stands in for the GPU backend
	})
	var notices []string
	m, err := Load(testModels[1], Options{Notice: func(s string) { notices = append(notices, s) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Backend.Name() != "cpu" || len(notices) != 1 || !strings.Contains(notices[0], "runs on the CPU") {
		t.Fatalf("auto: backend %q, notices %q", m.Backend.Name(), notices)
	}
	load(t, testModels[1], Options{Backend: "webgpu"})
	if len(asked) != 2 || asked[0] || !asked[1] {
		t.Fatalf("the factory was asked with explicit = %v, want [false true]", asked)
	}
}
