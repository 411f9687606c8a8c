// Command sdkplugin is the test plugin of the Go SDK (sdk/go/plugvisor):
// every hook, the host API and HTTP, with endpoints that let a test (or a
// benchmark) drive them from the host side. The SDK's tests run it under
// go-plugin's own host; plugvisor's own tests and benchmarks can run it too
// (scripts/setup-go builds it as target/go/sdkplugin).
//
//	PLUGVISOR_TEST_SDK_MODE=full     (default) all hooks, HTTP, chat.v1.MessageHooks
//	PLUGVISOR_TEST_SDK_MODE=partial  only OnConfigurationChange
//	PLUGVISOR_TEST_SDK_MODE=bare     no hooks at all
//	PLUGVISOR_TEST_MARKER=PATH       write "stopped" to PATH once Serve returned
//
// Configuration (full mode): {"greeting": "...", "refuse": "..."}; a
// non-empty "refuse" makes OnActivate, or OnConfigurationChange, refuse with
// that text.
//
// HTTP endpoints (full mode), under the plugin's mount path:
//
//	GET  /config             the configuration as the plugin sees it
//	ANY  /request[/...]      the *http.Request the SDK built, as JSON
//	POST /sha256             read the body; its length and SHA-256
//	POST /echo               write back each chunk as it is read, flushing
//	GET  /stream?n=N         N lines, each followed by a flush
//	GET  /big?size=N         N bytes in one Write
//	GET  /wait               block until the request's context ends; log it
//	GET  /panic[?after_head=1]  panic (after sending a head and some body)
//	POST /log                log one record at each level through the host
//	     /kv/{get,set,delete,list,cas}?key=..  the host's key-value store
//	GET  /bench/kv?op=get|set&n=N&size=B  N timed host API calls
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/examples/chat-host/gen/chatv1"
	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
)

type settings struct {
	Greeting string `json:"greeting"`
	Refuse   string `json:"refuse"`
}

// full implements every hook, serves HTTP and chat.v1.MessageHooks.
type full struct {
	chatv1.UnimplementedMessageHooksServer

	host *plugvisor.Host
	mux  *http.ServeMux

	mu       sync.Mutex
	settings settings
	changes  int
}

func (p *full) OnActivate(ctx context.Context, host *plugvisor.Host) error {
	var s settings
	if err := host.LoadConfiguration(&s); err != nil {
		return err
	}
	if s.Refuse != "" {
		return errors.New(s.Refuse)
	}
	p.host = host
	p.settings = s
	host.Logger().InfoContext(ctx, "activated", "plugin_id", host.PluginID(), "greeting", s.Greeting, "host_version", host.Version())
	return nil
}

func (p *full) OnConfigurationChange(ctx context.Context, c plugvisor.Configuration) error {
	var s settings
	if err := c.Decode(&s); err != nil {
		return err
	}
	if s.Refuse != "" {
		return errors.New(s.Refuse)
	}
	p.mu.Lock()
	changed := s != p.settings
	p.settings = s
	p.changes++
	p.mu.Unlock()
	// Only real changes are logged, so a benchmark that sends the same
	// configuration again and again (gohost hooks) times the hook alone.
	if changed {
		p.host.Logger().InfoContext(ctx, "configuration changed", "greeting", s.Greeting)
	}
	return nil
}

func (p *full) OnDeactivate(ctx context.Context) error {
	p.host.Logger().InfoContext(ctx, "deactivating")
	return nil
}

func (p *full) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

func (p *full) MessageWillBePosted(_ context.Context, req *chatv1.MessageWillBePostedRequest) (*chatv1.MessageWillBePostedResponse, error) {
	p.mu.Lock()
	greeting := p.settings.Greeting
	p.mu.Unlock()
	m := req.GetMessage()
	return &chatv1.MessageWillBePostedResponse{Message: &chatv1.Message{
		Channel: m.GetChannel(), UserId: m.GetUserId(), Text: greeting + " " + m.GetText(),
	}}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// hostError answers with the host API's failure, its gRPC code first.
func hostError(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadGateway, map[string]string{"code": status.Code(err).String(), "error": err.Error()})
}

func (p *full) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		s, changes := p.settings, p.changes
		p.mu.Unlock()
		var host settings
		if err := p.host.LoadConfiguration(&host); err != nil {
			hostError(w, err)
			return
		}
		fetched, err := p.host.FetchConfiguration(r.Context())
		if err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"settings": s, "changes": changes, "host_configuration": host, "fetched": json.RawMessage(fetched.JSON()),
		})
	})
	request := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"method": r.Method, "path": r.URL.Path, "raw_path": r.URL.RawPath, "raw_query": r.URL.RawQuery,
			"request_uri": r.RequestURI, "host": r.Host, "remote_addr": r.RemoteAddr, "proto": r.Proto,
			"proto_major": r.ProtoMajor, "proto_minor": r.ProtoMinor, "header": r.Header,
			"content_length": r.ContentLength, "tls": r.TLS != nil, "mount_path": plugvisor.MountPath(r),
			"query_a": r.URL.Query()["a"], "body": string(body),
		})
	}
	m.HandleFunc("/request", request)
	m.HandleFunc("/request/", request)
	m.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
	})
	m.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	m.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	})
	m.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("size"))
		body := make([]byte, n)
		for i := range body {
			body[i] = byte('a' + i%26)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	m.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		p.host.Logger().Info("request context ended", "path", r.URL.Path, "error", r.Context().Err())
	})
	m.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("after_head") != "" {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "partial body")
			w.(http.Flusher).Flush()
		}
		panic("sdkplugin: boom")
	})
	m.HandleFunc("POST /log", func(w http.ResponseWriter, r *http.Request) {
		l := p.host.Logger()
		ctx := r.Context()
		l.Log(ctx, plugvisor.LevelTrace, "trace line", "n", 1)
		l.DebugContext(ctx, "debug line", "flag", true)
		l.With("component", "sdk-test").WithGroup("req").InfoContext(ctx, "info line", "id", 42, slog.Group("user", "name", "ada"))
		l.WarnContext(ctx, "warn line", "err", errors.New("disk almost full"))
		l.ErrorContext(ctx, "error line", "took", 1500*time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	p.kvRoutes(m)
	m.HandleFunc("GET /bench/kv", p.benchKV)
	p.mux = m
}

// optionalParam is a query parameter that may be absent (nil).
func optionalParam(r *http.Request, name string) []byte {
	if !r.URL.Query().Has(name) {
		return nil
	}
	return []byte(r.URL.Query().Get(name))
}

func (p *full) kvRoutes(m *http.ServeMux) {
	kv := func() *plugvisor.KV { return p.host.KV() }
	m.HandleFunc("GET /kv/get", func(w http.ResponseWriter, r *http.Request) {
		v, found, err := kv().Get(r.Context(), r.URL.Query().Get("key"))
		if err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"found": found, "value": string(v)})
	})
	m.HandleFunc("POST /kv/set", func(w http.ResponseWriter, r *http.Request) {
		value, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := kv().Set(r.Context(), r.URL.Query().Get("key"), value); err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"stored": len(value)})
	})
	m.HandleFunc("POST /kv/delete", func(w http.ResponseWriter, r *http.Request) {
		existed, err := kv().Delete(r.Context(), r.URL.Query().Get("key"))
		if err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"existed": existed})
	})
	m.HandleFunc("GET /kv/list", func(w http.ResponseWriter, r *http.Request) {
		keys, err := kv().List(r.Context(), r.URL.Query().Get("prefix"))
		if err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	})
	m.HandleFunc("POST /kv/cas", func(w http.ResponseWriter, r *http.Request) {
		swapped, err := kv().CompareAndSet(r.Context(), r.URL.Query().Get("key"), optionalParam(r, "expected"), optionalParam(r, "value"))
		if err != nil {
			hostError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"swapped": swapped})
	})
}

// benchKV times n host API calls one after the other, as seen from the
// plugin, and returns each in microseconds: the plugin-side peer of a
// host's own numbers (gohost hostapi, plugvisor's bench). Each set writes
// a value that differs from the one before (a counter, zero-padded to
// size): SQLite writes nothing for a Set of the value already stored, so a
// repeated value would time no commit and no fsync.
func (p *full) benchKV(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	size, _ := strconv.Atoi(q.Get("size"))
	op := q.Get("op")
	if n < 1 || (op != "get" && op != "set") {
		http.Error(w, "want op=get|set and n>=1", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	value := []byte(strings.Repeat("v", size))
	if err := p.host.KV().Set(ctx, "bench", value); err != nil {
		hostError(w, err)
		return
	}
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		if op == "set" {
			value = fmt.Appendf(value[:0], "%0*d", size, i)
		}
		t := time.Now()
		var err error
		if op == "get" {
			_, _, err = p.host.KV().Get(ctx, "bench")
		} else {
			err = p.host.KV().Set(ctx, "bench", value)
		}
		if err != nil {
			hostError(w, err)
			return
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
	}
	writeJSON(w, http.StatusOK, map[string]any{"op": op, "n": n, "size": size, "latencies_us": lat})
}

// partial has only OnConfigurationChange.
type partial struct{}

func (partial) OnConfigurationChange(context.Context, plugvisor.Configuration) error { return nil }

// bare has no hooks.
type bare struct{}

func main() {
	var (
		p    any
		opts []plugvisor.Option
	)
	switch mode := os.Getenv("PLUGVISOR_TEST_SDK_MODE"); mode {
	case "", "full":
		f := &full{}
		f.routes()
		p = f
		opts = append(opts, plugvisor.WithGRPC(func(s *grpc.Server) { chatv1.RegisterMessageHooksServer(s, f) }))
	case "partial":
		p = partial{}
	case "bare":
		p = bare{}
	default:
		log.Fatalf("sdkplugin: unknown PLUGVISOR_TEST_SDK_MODE %q", mode)
	}
	err := plugvisor.Serve(p, opts...)
	if marker := os.Getenv("PLUGVISOR_TEST_MARKER"); marker != "" {
		_ = os.WriteFile(marker, []byte("stopped"), 0o644)
	}
	if err != nil {
		log.Fatal(err)
	}
}
