package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// hfConfig is a checkpoint's config.json, read field by field so that every
// error names the field, and so that a family can tell a field that is
// absent (the transformers default applies) from one set to null.
type hfConfig struct {
	path string
	m    map[string]any
}

func readHFConfig(path string) (*hfConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseHFConfig(path, data)
}

func parseHFConfig(path string, data []byte) (*hfConfig, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &hfConfig{path: path, m: m}, nil
}

// sub returns the object under key as an hfConfig (nil when absent or null).
func (c *hfConfig) sub(key string) (*hfConfig, error) {
	v, ok := c.m[key]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, c.errf(key, "want an object, got %s", jsonText(v))
	}
	return &hfConfig{path: c.path + ": " + key, m: m}, nil
}

func (c *hfConfig) errf(key, format string, args ...any) error {
	return fmt.Errorf("%s: %q: %s", c.path, key, fmt.Sprintf(format, args...))
}

// set reports whether key is present with a non-null value.
func (c *hfConfig) set(key string) bool { return c.m[key] != nil }

func (c *hfConfig) float(key string) (float64, error) {
	n, ok := c.m[key].(json.Number)
	if !ok {
		if c.m[key] == nil {
			return 0, c.errf(key, "missing")
		}
		return 0, c.errf(key, "want a number, got %s", jsonText(c.m[key]))
	}
	v, err := n.Float64()
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, c.errf(key, "want a finite number, got %v", n)
	}
	return v, nil
}

func (c *hfConfig) floatOr(key string, def float64) (float64, error) {
	if !c.set(key) {
		return def, nil
	}
	return c.float(key)
}

func (c *hfConfig) int(key string) (int, error) {
	v, err := c.float(key)
	if err != nil {
		return 0, err
	}
	if v != math.Trunc(v) || v < 0 || v > math.MaxInt32 {
		return 0, c.errf(key, "want a non-negative integer, got %v", v)
	}
	return int(v), nil
}

func (c *hfConfig) intOr(key string, def int) (int, error) {
	if !c.set(key) {
		return def, nil
	}
	return c.int(key)
}

func (c *hfConfig) boolOr(key string, def bool) (bool, error) {
	if !c.set(key) {
		return def, nil
	}
	b, ok := c.m[key].(bool)
	if !ok {
		return false, c.errf(key, "want true or false, got %s", jsonText(c.m[key]))
	}
	return b, nil
}

func (c *hfConfig) strOr(key, def string) (string, error) {
	if !c.set(key) {
		return def, nil
	}
	s, ok := c.m[key].(string)
	if !ok {
		return "", c.errf(key, "want a string, got %s", jsonText(c.m[key]))
	}
	return s, nil
}

func (c *hfConfig) strings(key string) ([]string, error) {
	if !c.set(key) {
		return nil, nil
	}
	list, ok := c.m[key].([]any)
	if !ok {
		return nil, c.errf(key, "want a list of strings, got %v", c.m[key])
	}
	out := make([]string, len(list))
	for i, v := range list {
		if out[i], ok = v.(string); !ok {
			return nil, c.errf(key, "entry %d: want a string, got %v", i, v)
		}
	}
	return out, nil
}

// floats reads key as a list of finite numbers (nil when absent).
func (c *hfConfig) floats(key string) ([]float64, error) {
	if !c.set(key) {
		return nil, nil
	}
	list, ok := c.m[key].([]any)
	if !ok {
		return nil, c.errf(key, "want a list of numbers, got %s", jsonText(c.m[key]))
	}
	out := make([]float64, len(list))
	for i, v := range list {
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, c.errf(key, "entry %d: want a finite number, got %s", i, jsonText(v))
		}
		out[i] = f
	}
	return out, nil
}

// ints reads key as one integer or a list of them (as eos_token_id may be).
func (c *hfConfig) ints(key string) ([]int, error) {
	if !c.set(key) {
		return nil, nil
	}
	if _, ok := c.m[key].(json.Number); ok {
		v, err := c.int(key)
		return []int{v}, err
	}
	list, ok := c.m[key].([]any)
	if !ok {
		return nil, c.errf(key, "want an integer or a list of them, got %v", c.m[key])
	}
	out := make([]int, len(list))
	for i, v := range list {
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
			return nil, c.errf(key, "entry %d: want a non-negative integer, got %v", i, v)
		}
		out[i] = int(f)
	}
	return out, nil
}

// refuse returns an error when key is set to anything but one of the
// allowed values (compared as JSON text, so false, null and 0 are exact):
// an option wick does not implement must not be dropped silently.
func (c *hfConfig) refuse(key string, allowed ...string) error {
	v, ok := c.m[key]
	if !ok {
		return nil
	}
	text := jsonText(v)
	for _, a := range allowed {
		if text == a {
			return nil
		}
	}
	return fmt.Errorf("%s: unsupported option %q = %s (wick supports %v)", c.path, key, text, allowed)
}

// ropeParams is one RoPE setting: the base and Llama 3 style or LongRoPE
// scaling.
type ropeParams struct {
	theta   float64
	scaling ropeScaling
	long    longRope
}

// longRope is rope_type "longrope" ("su") as the config states it; what it
// leaves out comes from the model's context fields (see llamaConfig).
type longRope struct {
	short, long  []float64
	factor, attn float64 // 0: not stated
	original     int     // 0: not stated here
}

type ropeScaling struct {
	factor, low, high float64
	original          int
}

// parseRope reads a RoPE setting in transformers' rope_parameters /
// rope_scaling form: rope_type (or type) "default", "llama3" or "longrope"
// (or its old name "su"); any other
// type is refused by name. theta is read from the object's rope_theta when
// present, else it is def.
func parseRope(r *hfConfig, def float64) (ropeParams, error) {
	p := ropeParams{theta: def}
	if r == nil {
		return p, nil
	}
	var err error
	if p.theta, err = r.floatOr("rope_theta", def); err != nil {
		return p, err
	}
	typ, err := r.strOr("rope_type", "")
	if err != nil {
		return p, err
	}
	if typ == "" {
		if typ, err = r.strOr("type", "default"); err != nil {
			return p, err
		}
	}
	if f, err := r.floatOr("partial_rotary_factor", 1); err != nil || f != 1 {
		if err != nil {
			return p, err
		}
		return p, fmt.Errorf("%s: unsupported option \"partial_rotary_factor\" = %v (wick rotates whole heads)", r.path, f)
	}
	switch typ {
	case "default":
		return p, nil
	case "llama3":
		s := &p.scaling
		if s.factor, err = r.float("factor"); err != nil {
			return p, err
		}
		if s.low, err = r.float("low_freq_factor"); err != nil {
			return p, err
		}
		if s.high, err = r.float("high_freq_factor"); err != nil {
			return p, err
		}
		if s.original, err = r.int("original_max_position_embeddings"); err != nil {
			return p, err
		}
		return p, nil
	case "longrope", "su":
		l := &p.long
		for _, f := range []struct {
			dst *[]float64
			key string
		}{{&l.short, "short_factor"}, {&l.long, "long_factor"}} {
			if *f.dst, err = r.floats(f.key); err != nil {
				return p, err
			}
			if len(*f.dst) == 0 {
				return p, r.errf(f.key, "missing or empty; LongRoPE needs one factor per rotated pair")
			}
		}
		if l.factor, err = r.floatOr("factor", 0); err != nil {
			return p, err
		}
		if l.attn, err = r.floatOr("attention_factor", 0); err != nil {
			return p, err
		}
		if l.original, err = r.intOr("original_max_position_embeddings", 0); err != nil {
			return p, err
		}
		return p, nil
	}
	return p, fmt.Errorf("%s: unsupported option rope_type %q (wick supports \"default\", \"llama3\" and \"longrope\")", r.path, typ)
}

// jsonText is v as JSON, for errors that quote a config value.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
