// Package jinja renders the Jinja chat templates that Hugging Face models
// ship (tokenizer_config.json's chat_template) the way transformers'
// apply_chat_template does, and compiles them into wick's append-only role
// format (see Compile).
//
// Rendering is github.com/nikolalohinski/gonja/v2's, in the environment
// transformers sets up: trim_blocks and lstrip_blocks, raise_exception,
// strftime_now on a clock the caller may pin, and tojson as Python's
// json.dumps (pyjson.go). Conditional expressions inside parentheses, which
// gonja's parser refuses, are rewritten first (rewrite.go). This package is used by the
// converter only; the chat runtime (engine/chat, and the browser's module)
// works from the compiled role format and never links a template engine.
package jinja

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Message is one turn of a conversation as templates see it: role
// "system", "user", "assistant" or "tool" (a tool's result), and for an
// assistant turn that calls tools, the calls as transformers takes them
// ({"type": "function", "function": {"name": ..., "arguments": {...}}}).
type Message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	ToolCalls []any  `json:"tool_calls,omitempty"`
}

// Options are the variables a template is rendered with besides messages.
type Options struct {
	AddGenerationPrompt bool
	BosToken, EosToken  string
	// Now is what strftime_now formats; the zero time means the clock.
	Now time.Time
	// Vars are further variables (enable_thinking, date_string, tools as
	// a list of JSON schemas, ...).
	Vars map[string]any
}

// Template is a parsed chat template.
type Template struct {
	tpl *exec.Template
}

// ErrRaised wraps the message of a template's raise_exception, by which
// templates refuse conversations (a system role the model lacks, roles
// that do not alternate).
var ErrRaised = errors.New("the template refused the conversation")

// Parse parses a chat template. A template gonja refuses is parsed again
// with its parenthesised conditional expressions rewritten (see
// rewriteConditionals), which gonja's parser does not take.
func Parse(src string) (*Template, error) {
	t, err := parse(src)
	if err == nil {
		return t, nil
	}
	if rewritten, changed := rewriteConditionals(src); changed {
		if t, err2 := parse(rewritten); err2 == nil {
			return t, nil
		}
	}
	return nil, err
}

func parse(src string) (*Template, error) {
	cfg := config.New()
	// transformers renders with trim_blocks and lstrip_blocks.
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	loader, err := loaders.NewShiftedLoader("chat_template", strings.NewReader(src), memLoader{})
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	env := *gonja.DefaultEnvironment
	env.Context = gonja.DefaultContext.Inherit()
	env.Filters = filters
	tpl, err := exec.NewTemplate("chat_template", cfg, loader, &env)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &Template{tpl: tpl}, nil
}

// Render renders msgs.
func (t *Template) Render(msgs []Message, o Options) (out string, err error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		msg := map[string]any{"role": m.Role, "content": m.Content}
		if m.ToolCalls != nil {
			// Only when present: Llama 3.2's template tests
			// 'tool_calls' in message.
			msg["tool_calls"] = m.ToolCalls
		}
		list[i] = msg
	}
	now := o.Now
	raised := ""
	vars := map[string]any{
		"messages":              list,
		"add_generation_prompt": o.AddGenerationPrompt,
		"bos_token":             o.BosToken,
		"eos_token":             o.EosToken,
		"raise_exception": func(msg string) (string, error) {
			raised = msg
			return "", errors.New(msg)
		},
		"strftime_now": func(format string) string {
			if now.IsZero() {
				now = time.Now()
			}
			return strftime(now, format)
		},
	}
	for k, v := range o.Vars {
		vars[k] = v
	}
	defer func() {
		// gonja is not known to panic on templates, but a chat template is
		// input from a downloaded file: never take the process down.
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template: rendering failed: %v", r)
		}
	}()
	out, err = t.tpl.ExecuteToString(exec.NewContext(vars))
	if raised != "" {
		// gonja flattens the function's error into text; the message is
		// kept here to give callers a sentinel to test for.
		return "", fmt.Errorf("chat template: %w: %s", ErrRaised, raised)
	}
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// memLoader refuses includes: a chat template is one self-contained
// string, and must not read files.
type memLoader struct{}

func (memLoader) Read(path string) (io.Reader, error) {
	return nil, fmt.Errorf("cannot include %q", path)
}
func (memLoader) Resolve(path string) (string, error)      { return path, nil }
func (l memLoader) Inherit(string) (loaders.Loader, error) { return l, nil }

// strftime formats t with the C directives templates use (%d %b %Y and
// their kin); others are kept as written.
func strftime(t time.Time, format string) string {
	var sb strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			sb.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'd':
			fmt.Fprintf(&sb, "%02d", t.Day())
		case 'e':
			fmt.Fprintf(&sb, "%2d", t.Day())
		case 'm':
			fmt.Fprintf(&sb, "%02d", int(t.Month()))
		case 'b':
			sb.WriteString(t.Month().String()[:3])
		case 'B':
			sb.WriteString(t.Month().String())
		case 'y':
			fmt.Fprintf(&sb, "%02d", t.Year()%100)
		case 'Y':
			fmt.Fprintf(&sb, "%d", t.Year())
		case 'a':
			sb.WriteString(t.Weekday().String()[:3])
		case 'A':
			sb.WriteString(t.Weekday().String())
		case 'H':
			fmt.Fprintf(&sb, "%02d", t.Hour())
		case 'M':
			fmt.Fprintf(&sb, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&sb, "%02d", t.Second())
		case '%':
			sb.WriteByte('%')
		default:
			sb.WriteByte('%')
			sb.WriteByte(format[i])
		}
	}
	return sb.String()
}
