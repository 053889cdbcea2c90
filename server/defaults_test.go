package server

import "testing"

// TestSamplingDefaults checks that a request without sampling fields gets
// the chat page's settings, and that temperature 0 stays greedy.
func TestSamplingDefaults(t *testing.T) {
	zero := 0.0
	tests := []struct {
		name       string
		req        chatRequest
		temp, topP float32
	}{
		{"no fields", chatRequest{}, 0.8, 0.95},
		{"greedy", chatRequest{Temperature: &zero}, 0, 0.95},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, apiErr := tt.req.genParams()
			if apiErr != nil {
				t.Fatal(apiErr)
			}
			if p.Sample.Temperature != tt.temp || p.Sample.TopP != tt.topP {
				t.Fatalf("temperature %v, top_p %v; want %v, %v", p.Sample.Temperature, p.Sample.TopP, tt.temp, tt.topP)
			}
		})
	}
}
