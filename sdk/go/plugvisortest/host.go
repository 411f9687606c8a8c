// Package plugvisortest runs a plugin under go-plugin's own host
// (plugin.NewClient) and plays plugvisor's part, for tests of plugins built
// with package plugvisor or any other plugin that speaks plugvisor.v1: it
// serves an in-memory host API ([Host]) on a go-plugin broker id and calls the
// plugin's hooks in plugvisor's order ([Plugin]).
//
//	p, err := plugvisortest.Start(plugvisortest.Config{Cmd: exec.Command("./my-plugin")})
//	...
//	defer p.Kill()
//	resp, err := p.Activate(ctx, "my-plugin", `{"greeting": "hi"}`)
//	res, err := (&http.Client{Transport: p}).Get("http://plugin/status.json")
//
// It is a test double: what it does not check (rate limits, durability,
// identities) it does not pretend to.
package plugvisortest

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// Defaults of a [NewHost]'s limits.
const (
	DefaultMaxValueBytes = 64 << 10
	DefaultMaxKeyBytes   = 512
	// DefaultListPage is the page size when a List asks for 0 keys, as in
	// plugvisor.v1.KvListRequest.
	DefaultListPage = 1000
	// MaxListPage caps what a List may ask for, as in plugvisor.v1.
	MaxListPage = 10000
)

// LogRecord is one plugvisor.v1.Log/Write a plugin made.
type LogRecord struct {
	Level   plugvisorv1.LogLevel
	Message string
	Fields  map[string]string
}

// String renders the record on one line: level, message, fields sorted by
// name.
func (r LogRecord) String() string {
	keys := make([]string, 0, len(r.Fields))
	for k := range r.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", strings.TrimPrefix(r.Level.String(), "LOG_LEVEL_"), r.Message)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, r.Fields[k])
	}
	return b.String()
}

// Host is an in-memory host API: plugvisor.v1.KeyValue, Log and
// Configuration, with size limits that fail as plugvisor's do
// (RESOURCE_EXHAUSTED, INVALID_ARGUMENT). One Host may serve several plugin
// processes in turn, to test what survives a restart. Set the limit fields
// before a plugin uses the Host.
type Host struct {
	// A value longer than this fails with RESOURCE_EXHAUSTED.
	MaxValueBytes int
	// A key longer than this fails with INVALID_ARGUMENT.
	MaxKeyBytes int
	// The page size of a List that asks for 0 keys.
	ListPage int

	mu     sync.Mutex
	kv     map[string][]byte
	logs   []LogRecord
	logged chan struct{} // closed and replaced on every record
	config string
	calls  map[string]int
	tls    int // calls over verified TLS
}

// NewHost returns an empty Host with the default limits.
func NewHost() *Host {
	return &Host{
		MaxValueBytes: DefaultMaxValueBytes,
		MaxKeyBytes:   DefaultMaxKeyBytes,
		ListPage:      DefaultListPage,
		kv:            map[string][]byte{},
		logged:        make(chan struct{}),
		config:        "{}",
		calls:         map[string]int{},
	}
}

// Register serves the Host's three services on s.
func (h *Host) Register(s grpc.ServiceRegistrar) {
	plugvisorv1.RegisterKeyValueServer(s, kvServer{h: h})
	plugvisorv1.RegisterLogServer(s, logServer{h: h})
	plugvisorv1.RegisterConfigurationServer(s, configServer{h: h})
}

// Value returns what the store holds under key.
func (h *Host) Value(key string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.kv[key]
	return bytes.Clone(v), ok
}

// SetValue stores a value as if a plugin had.
func (h *Host) SetValue(key string, value []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kv[key] = bytes.Clone(value)
}

// Keys returns every key in the store, sorted.
func (h *Host) Keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.kv))
	for k := range h.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Calls returns how many times each host API method was called, by its
// full name ("/plugvisor.v1.KeyValue/List").
func (h *Host) Calls(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[method]
}

// Configuration is what plugvisor.v1.Configuration/Get answers: the last
// configuration the plugin accepted, through [Plugin.Activate] and
// [Plugin.ChangeConfiguration], or one set with [Host.SetConfiguration].
func (h *Host) Configuration() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.config
}

// SetConfiguration changes what plugvisor.v1.Configuration/Get answers.
func (h *Host) SetConfiguration(json string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.config = json
}

// Logs returns every record logged so far, oldest first.
func (h *Host) Logs() []LogRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]LogRecord(nil), h.logs...)
}

// WaitLog waits for a record that match accepts, among those logged so far
// and those to come, and returns the first. It fails when ctx ends first,
// listing what was logged.
func (h *Host) WaitLog(ctx context.Context, match func(LogRecord) bool) (LogRecord, error) {
	seen := 0
	for {
		h.mu.Lock()
		logs, wake := h.logs, h.logged
		h.mu.Unlock()
		for ; seen < len(logs); seen++ {
			if match(logs[seen]) {
				return logs[seen], nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			lines := make([]string, len(logs))
			for i, r := range logs {
				lines[i] = r.String()
			}
			return LogRecord{}, fmt.Errorf("no matching log record (%w); logged:\n  %s", ctx.Err(), strings.Join(lines, "\n  "))
		}
	}
}

// TLSCalls returns how many host API calls came over TLS with a client
// certificate the host verified, as go-plugin's AutoMTLS makes them.
func (h *Host) TLSCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tls
}

func (h *Host) count(ctx context.Context, method string) {
	verified := false
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			verified = len(info.State.VerifiedChains) > 0
		}
	}
	h.mu.Lock()
	h.calls[method]++
	if verified {
		h.tls++
	}
	h.mu.Unlock()
}

func (h *Host) checkKey(key string) error {
	if key == "" {
		return status.Error(codes.InvalidArgument, "the key is empty")
	}
	if !utf8.ValidString(key) {
		return status.Error(codes.InvalidArgument, "the key is not valid UTF-8")
	}
	if len(key) > h.MaxKeyBytes {
		return status.Errorf(codes.InvalidArgument, "the key is %d bytes; the limit is %d", len(key), h.MaxKeyBytes)
	}
	return nil
}

func (h *Host) checkValue(value []byte) error {
	if len(value) > h.MaxValueBytes {
		return status.Errorf(codes.ResourceExhausted, "the value is %d bytes; the limit is %d", len(value), h.MaxValueBytes)
	}
	return nil
}

type kvServer struct {
	plugvisorv1.UnimplementedKeyValueServer
	h *Host
}

func (s kvServer) Get(ctx context.Context, req *plugvisorv1.KvGetRequest) (*plugvisorv1.KvGetResponse, error) {
	s.h.count(ctx, plugvisorv1.KeyValue_Get_FullMethodName)
	if err := s.h.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	v, ok := s.h.kv[req.GetKey()]
	return &plugvisorv1.KvGetResponse{Found: ok, Value: bytes.Clone(v)}, nil
}

func (s kvServer) Set(ctx context.Context, req *plugvisorv1.KvSetRequest) (*plugvisorv1.KvSetResponse, error) {
	s.h.count(ctx, plugvisorv1.KeyValue_Set_FullMethodName)
	if err := s.h.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	if err := s.h.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.kv[req.GetKey()] = bytes.Clone(req.GetValue())
	return &plugvisorv1.KvSetResponse{}, nil
}

func (s kvServer) Delete(ctx context.Context, req *plugvisorv1.KvDeleteRequest) (*plugvisorv1.KvDeleteResponse, error) {
	s.h.count(ctx, plugvisorv1.KeyValue_Delete_FullMethodName)
	if err := s.h.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	_, ok := s.h.kv[req.GetKey()]
	delete(s.h.kv, req.GetKey())
	return &plugvisorv1.KvDeleteResponse{Existed: ok}, nil
}

func (s kvServer) List(ctx context.Context, req *plugvisorv1.KvListRequest) (*plugvisorv1.KvListResponse, error) {
	s.h.count(ctx, plugvisorv1.KeyValue_List_FullMethodName)
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = s.h.ListPage
	}
	limit = min(limit, MaxListPage)
	s.h.mu.Lock()
	var keys []string
	for k := range s.h.kv {
		if strings.HasPrefix(k, req.GetPrefix()) && k > req.GetStartAfter() {
			keys = append(keys, k)
		}
	}
	s.h.mu.Unlock()
	sort.Strings(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	return &plugvisorv1.KvListResponse{Keys: keys, More: more}, nil
}

func (s kvServer) CompareAndSet(ctx context.Context, req *plugvisorv1.KvCompareAndSetRequest) (*plugvisorv1.KvCompareAndSetResponse, error) {
	s.h.count(ctx, plugvisorv1.KeyValue_CompareAndSet_FullMethodName)
	if err := s.h.checkKey(req.GetKey()); err != nil {
		return nil, err
	}
	if err := s.h.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	current, exists := s.h.kv[req.GetKey()]
	// Presence, not emptiness: an absent expected means "must not exist".
	if (req.Expected == nil) == exists || (exists && !bytes.Equal(current, req.Expected)) {
		return &plugvisorv1.KvCompareAndSetResponse{Swapped: false}, nil
	}
	if req.Value == nil {
		delete(s.h.kv, req.GetKey())
	} else {
		s.h.kv[req.GetKey()] = bytes.Clone(req.Value)
	}
	return &plugvisorv1.KvCompareAndSetResponse{Swapped: true}, nil
}

type logServer struct {
	plugvisorv1.UnimplementedLogServer
	h *Host
}

func (s logServer) Write(ctx context.Context, req *plugvisorv1.LogWriteRequest) (*plugvisorv1.LogWriteResponse, error) {
	s.h.count(ctx, plugvisorv1.Log_Write_FullMethodName)
	fields := make(map[string]string, len(req.GetFields()))
	for k, v := range req.GetFields() {
		fields[k] = v
	}
	s.h.mu.Lock()
	s.h.logs = append(s.h.logs, LogRecord{Level: req.GetLevel(), Message: req.GetMessage(), Fields: fields})
	close(s.h.logged)
	s.h.logged = make(chan struct{})
	s.h.mu.Unlock()
	return &plugvisorv1.LogWriteResponse{}, nil
}

type configServer struct {
	plugvisorv1.UnimplementedConfigurationServer
	h *Host
}

func (s configServer) Get(ctx context.Context, _ *plugvisorv1.ConfigurationGetRequest) (*plugvisorv1.ConfigurationGetResponse, error) {
	s.h.count(ctx, plugvisorv1.Configuration_Get_FullMethodName)
	return &plugvisorv1.ConfigurationGetResponse{ConfigurationJson: s.h.Configuration()}, nil
}
