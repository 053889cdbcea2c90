package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/wick-run/wick/engine"
	"github.com/wick-run/wick/engine/chat"
	"github.com/wick-run/wick/engine/tokenizer"
)

// The native API: an OpenAI-compatible chat completions endpoint over the
// engine. Each model runs one session at a time; requests wait their turn
// in arrival order (Go's channel semantics), so sessions never share KV and
// a reply does not depend on what else is being served. A request whose
// client goes away stops waiting, or stops generating, at once.

const (
	defaultMaxBody  = 1 << 20
	defaultMaxQueue = 64
)

type api struct {
	models  map[string]*apiModel
	order   []*apiModel
	maxBody int64
	// parsing admits a few requests at a time to decoding and tokenizing,
	// the steps whose memory grows with the body: without it, every
	// request in flight would hold its parsed copies and token lists at
	// once, long before the model's queue bounds anything.
	parsing chan struct{}
	created int64 // when the models were loaded, for /v1/models
	logf    func(string, ...any)
	name    string // Config.ServerName

	// Test hooks: onText runs before each streamed piece is sent, onFinish
	// after each generation with why it ended.
	onText   func(ctx context.Context)
	onFinish func(model string, f engine.Finish)
}

// apiModel is a model the API runs, with its queue.
type apiModel struct {
	name       string
	m          *engine.Model
	maxPrompt  int           // bytes of message text that certainly take more tokens than the context holds
	turn       chan struct{} // holds a token while a session runs
	pending    atomic.Int64  // requests waiting or running
	maxPending int64
}

func newAPI(models []*servedModel, cfg Config) (*api, error) {
	a := &api{models: make(map[string]*apiModel), maxBody: cfg.MaxBodyBytes, created: time.Now().Unix(), logf: cfg.Logf, name: cfg.ServerName,
		parsing: make(chan struct{}, runtime.GOMAXPROCS(0))}
	if a.maxBody <= 0 {
		a.maxBody = defaultMaxBody
	}
	maxQueue := cfg.MaxQueue
	if maxQueue <= 0 {
		maxQueue = defaultMaxQueue
	}
	if a.logf == nil {
		a.logf = func(string, ...any) {}
	}
	opts := cfg.Engine
	if opts.Notice == nil {
		opts.Notice = func(s string) { a.logf("wick serve: %s", s) }
	}
	for _, sm := range models {
		m, err := engine.Load(sm.dir, opts)
		if err != nil {
			// a, not a named result, so that the models loaded so far are
			// still there to close.
			a.close()
			return nil, fmt.Errorf("api: model %s: %w", sm.name, err)
		}
		am := &apiModel{name: sm.name, m: m, turn: make(chan struct{}, 1), maxPending: int64(maxQueue) + 1,
			maxPrompt: m.Context() * maxPieceBytes(m.Tokenizer)}
		a.models[sm.name] = am
		a.order = append(a.order, am)
	}
	return a, nil
}

// maxPieceBytes is the most bytes of text one token of tok stands for: the
// longest piece as stored, which spells every byte it covers with at least
// one byte ("▁" for a space, one character per byte in byte-level BPE). So
// a text of more than context*maxPieceBytes bytes cannot fit the context,
// and is refused without being tokenized.
func maxPieceBytes(tok *tokenizer.Tokenizer) int {
	longest := 1
	for id := range tok.Vocab() {
		if p, ok := tok.Piece(int32(id)); ok {
			longest = max(longest, len(p))
		}
	}
	return longest
}

func (a *api) close() error {
	var errs []error
	for _, am := range a.order {
		errs = append(errs, am.m.Close())
	}
	return errors.Join(errs...)
}

func (a *api) routes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/chat/completions", a.named(a.chatCompletions))
	mux.HandleFunc("/v1/models", a.named(a.listModels))
	mux.HandleFunc("/v1/models/{id}", a.named(a.getModel))
	mux.HandleFunc("/v1/", a.named(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiErr{Message: "no endpoint " + r.URL.Path + ": wick serves /v1/chat/completions and /v1/models", Type: "invalid_request_error"})
	}))
}

// named sets X-Wick-Server on h's responses, errors included, so that an
// operator sees which instance behind a proxy answered.
func (a *api) named(h http.HandlerFunc) http.HandlerFunc {
	if a.name == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(ServerHeader, a.name)
		h(w, r)
	}
}

// allow answers 405 unless the request's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || m == http.MethodGet && r.Method == http.MethodHead {
			return true
		}
	}
	allowed := methods[0]
	for _, m := range methods[1:] {
		allowed += ", " + m
	}
	w.Header().Set("Allow", allowed)
	writeError(w, http.StatusMethodNotAllowed, apiErr{Message: fmt.Sprintf("method %s not allowed here; use %s", r.Method, allowed), Type: "invalid_request_error"})
	return false
}

func (a *api) modelObject(am *apiModel) modelObject {
	return modelObject{ID: am.name, Object: "model", Created: a.created, OwnedBy: "wick", ContextLength: am.m.Context()}
}

func (a *api) listModels(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	data := make([]modelObject, len(a.order))
	for i, am := range a.order {
		data[i] = a.modelObject(am)
	}
	writeJSON(w, http.StatusOK, struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{"list", data})
}

func (a *api) getModel(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	am := a.models[r.PathValue("id")]
	if am == nil {
		newAPIError(http.StatusNotFound, "invalid_request_error", "model", "model_not_found", fmt.Sprintf("no model %q", r.PathValue("id"))).write(w)
		return
	}
	writeJSON(w, http.StatusOK, a.modelObject(am))
}

func (a *api) chatCompletions(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) || !jsonBody(w, r) {
		return
	}
	req, am, history, last, params, aerr := a.parseRequest(w, r)
	if aerr != nil {
		aerr.write(w)
		return
	}
	if key, aerr := conversationKey(r, req); aerr != nil {
		aerr.write(w)
		return
	} else if key != "" {
		w.Header().Set(ConversationHeader, key)
	}
	ctx, cancel := replyContext(r, req.Stream)
	defer cancel()
	release, aerr := am.wait(ctx)
	if aerr != nil {
		w.Header().Set("Retry-After", "1")
		aerr.write(w)
		return
	}
	if release == nil {
		return // the client went away while waiting
	}
	defer release()

	sess, err := am.m.NewSession("")
	if err != nil {
		a.serverError(w, am, err)
		return
	}
	defer sess.Close()
	if err := sess.SetHistory(history); err != nil {
		invalid("messages", "", "%v", err).write(w)
		return
	}
	out := &replyWriter{w: w, stream: req.Stream, usage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage, cancel: cancel,
		head: chatCompletion{ID: newCompletionID(), Created: time.Now().Unix(), Model: am.name}}
	onText := out.text
	if a.onText != nil {
		onText = func(s string) { a.onText(ctx); out.text(s) }
	}
	if req.Stream {
		out.start()
	}
	reply, err := sess.Send(ctx, last, params, onText)
	if a.onFinish != nil && reply != nil {
		a.onFinish(am.name, reply.Finish)
	}
	switch {
	case ctx.Err() != nil:
		return // the client went away; nobody reads what would be written
	case errors.Is(err, engine.ErrContextFull):
		out.fail(invalid("messages", "context_length_exceeded", "%v", err))
	case err != nil:
		a.logf("wick serve: model %s: %v", am.name, err)
		out.fail(newAPIError(http.StatusInternalServerError, "server_error", "", "", "generation failed"))
	default:
		out.finish(reply)
	}
}

// parseRequest reads a chat completion request, then decodes and checks it,
// with its conversation and sampling parameters, under the parsing
// semaphore (the body is read outside it, so that a slow client holds only
// its own connection).
// Text too long for the model's context is refused by its byte length
// before anything is tokenized; the rest is tokenized once here, to refuse
// a conversation too long for the context before it queues (the engine
// checks again, but by then a stream may have begun).
func (a *api) parseRequest(w http.ResponseWriter, r *http.Request) (req *chatRequest, am *apiModel, history []chat.Message, last string, params engine.GenParams, aerr *apiError) {
	body, aerr := a.readBody(w, r)
	if aerr != nil {
		return
	}
	select {
	case a.parsing <- struct{}{}:
		defer func() { <-a.parsing }()
	case <-r.Context().Done():
		return nil, nil, nil, "", params, invalid("", "", "the client went away")
	}
	if req, am, aerr = a.decodeRequest(body); aerr != nil {
		return
	}
	if history, last, aerr = req.conversation(); aerr != nil {
		return
	}
	if params, aerr = req.genParams(); aerr != nil {
		return
	}
	n := len(last)
	for _, m := range history {
		n += len(m.Content)
	}
	if n > am.maxPrompt {
		aerr = invalid("messages", "context_length_exceeded", "the messages hold %d bytes of text, more than the %d tokens model %s holds per conversation could take: shorten the conversation", n, am.m.Context(), am.name)
		return
	}
	prompt := am.m.Template.Encode(append(slices.Clip(history), chat.Message{Role: chat.User, Content: last}), true)
	if n, limit := len(prompt), am.m.Context(); n >= limit {
		aerr = invalid("messages", "context_length_exceeded", "the messages take %d tokens; model %s holds %d per conversation (prompt and reply): shorten the conversation", n, am.name, limit)
	}
	return
}

// decodeRequest parses the body and finds the model it names.
func (a *api) decodeRequest(body []byte) (*chatRequest, *apiModel, *apiError) {
	req, aerr := decodeChatRequest(body)
	if aerr != nil {
		return nil, nil, aerr
	}
	if req.Model == "" {
		return nil, nil, invalid("model", "", "model is missing: name one of %v (see /v1/models)", a.names())
	}
	am := a.models[req.Model]
	if am == nil {
		return nil, nil, invalid("model", "model_not_found", "no model %q: this server runs %v", req.Model, a.names())
	}
	return req, am, nil
}

// shutdownKey holds, in a request's context, the context Run cancels when
// the server shuts down.
type shutdownKey struct{}

// replyContext is the context a reply is queued and generated under. A
// streamed reply does not end when the client's side of the connection
// reaches EOF: net/http cancels the request's context then, but a client
// that half-closes (SHUT_WR) after its request still reads the stream. A
// client that is really gone is noticed by the next event that cannot be
// written (replyWriter cancels then), and Run's shutdown still cancels it.
// A whole reply has no writes to notice that by, so it follows the
// request's context.
func replyContext(r *http.Request, stream bool) (context.Context, context.CancelFunc) {
	if !stream {
		return context.WithCancel(r.Context())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	if down, ok := r.Context().Value(shutdownKey{}).(context.Context); ok {
		stop := context.AfterFunc(down, cancel)
		return ctx, func() { stop(); cancel() }
	}
	return ctx, cancel
}

// readBody reads the body, at most maxBody bytes, into a buffer of its
// declared length where it has one (io.ReadAll would double its way there,
// leaving garbage of about the same size).
func (a *api) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	tooBig := func() *apiError {
		return newAPIError(http.StatusRequestEntityTooLarge, "invalid_request_error", "", "", fmt.Sprintf("the body is larger than the limit of %d bytes", a.maxBody))
	}
	if r.ContentLength > a.maxBody {
		return nil, tooBig()
	}
	body := http.MaxBytesReader(w, r.Body, a.maxBody)
	var data []byte
	var err error
	if r.ContentLength >= 0 {
		data = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, data)
	} else {
		data, err = io.ReadAll(body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooBig()
		}
		return nil, invalid("", "", "reading the body: %v", err)
	}
	return data, nil
}

func (a *api) names() []string {
	names := make([]string, len(a.order))
	for i, am := range a.order {
		names[i] = am.name
	}
	return names
}

func (a *api) serverError(w http.ResponseWriter, am *apiModel, err error) {
	a.logf("wick serve: model %s: %v", am.name, err)
	newAPIError(http.StatusInternalServerError, "server_error", "", "", "the model could not start a session").write(w)
}

// wait queues for the model's turn. It returns a release func, or nil when
// ctx ended first, or a 429 when too many requests are already queued.
func (am *apiModel) wait(ctx context.Context) (release func(), aerr *apiError) {
	if am.pending.Add(1) > am.maxPending {
		am.pending.Add(-1)
		return nil, newAPIError(http.StatusTooManyRequests, "rate_limit_error", "", "", fmt.Sprintf("model %s has %d requests queued; retry later", am.name, am.maxPending-1))
	}
	select {
	case am.turn <- struct{}{}:
		return func() { <-am.turn; am.pending.Add(-1) }, nil
	case <-ctx.Done():
		am.pending.Add(-1)
		return nil, nil
	}
}

func newCompletionID() string {
	var b [12]byte
	rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// replyWriter sends a reply whole, or as server-sent events while it is
// generated.
type replyWriter struct {
	w       http.ResponseWriter
	stream  bool
	usage   bool // stream: send a last chunk with the usage
	head    chatCompletion
	started bool
	cancel  context.CancelFunc // stops the generation when the client is gone
}

// start sends the stream's headers and its first chunk, which names the role.
func (o *replyWriter) start() {
	h := o.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell proxies not to hold the events back
	o.w.WriteHeader(http.StatusOK)
	o.started = true
	empty := ""
	o.event(o.chunk(&chatReply{Role: "assistant", Content: &empty}, nil))
}

func (o *replyWriter) chunk(delta *chatReply, finish *string) chatCompletion {
	c := o.head
	c.Object = "chat.completion.chunk"
	c.Choices = []choice{{Delta: delta, FinishReason: finish}}
	return c
}

func (o *replyWriter) text(piece string) {
	if !o.stream {
		return
	}
	o.event(o.chunk(&chatReply{Content: &piece}, nil))
}

// event writes one server-sent event and flushes it to the client.
func (o *replyWriter) event(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		o.cancel()
		return
	}
	o.writeEvent(data)
}

func (o *replyWriter) writeEvent(data []byte) {
	buf := make([]byte, 0, len(data)+8)
	buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	if _, err := o.w.Write(buf); err != nil {
		o.cancel()
		return
	}
	if err := http.NewResponseController(o.w).Flush(); err != nil {
		o.cancel()
	}
}

func (o *replyWriter) finish(r *engine.Reply) {
	if !o.stream {
		c := o.head
		c.Object = "chat.completion"
		c.Choices = []choice{{Message: &chatReply{Role: "assistant", Content: &r.Text}, FinishReason: finishReason(r.Finish)}}
		c.Usage = replyUsage(r)
		writeJSON(o.w, http.StatusOK, c)
		return
	}
	o.event(o.chunk(&chatReply{}, finishReason(r.Finish)))
	if o.usage {
		c := o.head
		c.Object = "chat.completion.chunk"
		c.Choices = []choice{}
		c.Usage = replyUsage(r)
		o.event(c)
	}
	o.writeEvent([]byte("[DONE]"))
}

// fail reports an error: as the response when nothing was sent yet, else as
// a last event, as OpenAI does mid-stream.
func (o *replyWriter) fail(e *apiError) {
	if !o.started {
		e.write(o.w)
		return
	}
	o.event(struct {
		Error apiErr `json:"error"`
	}{e.body})
}
