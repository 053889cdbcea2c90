package engine

import (
	"strings"
	"testing"

	"github.com/wick-run/wick/internal/testmodel"
)

// TestCheckIsLoads checks that Check refuses each broken model, and that
// Load refuses it with the same words: the validations cannot drift apart.
func TestCheckIsLoads(t *testing.T) {
	for name, tc := range testmodel.BrokenDirs(t, testModels[0]) {
		t.Run(name, func(t *testing.T) {
			_, cerr := Check(tc.Dir)
			if cerr == nil || !strings.Contains(cerr.Error(), tc.Want) || !strings.Contains(cerr.Error(), tc.Dir) {
				t.Fatalf("Check: %v; want an error naming %s and saying %q", cerr, tc.Dir, tc.Want)
			}
			m, lerr := Load(tc.Dir, Options{Backend: "cpu"})
			if lerr == nil {
				m.Close()
				t.Fatal("Load accepted what Check refused")
			}
			if lerr.Error() != cerr.Error() {
				t.Errorf("Load says %q, Check %q", lerr, cerr)
			}
		})
	}
	if _, err := Check(testModels[0]); err != nil {
		t.Fatal(err)
	}
}
