package plugvisor_test

// These tests build tests/goplugins/sdkplugin (a plugin made with this SDK)
// and drive it as real processes from go-plugin's own host, which plays
// plugvisor's part through package plugvisortest: the host API is served on
// a go-plugin broker id (broker.NextId + AcceptAndServe) and the hooks are
// called over the client's connection. Every test runs with go-plugin's
// AutoMTLS off and on.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/examples/chat-host/gen/chatv1"
	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

var sdkPlugin string // the built test plugin

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "plugvisor-sdk-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sdkPlugin = filepath.Join(dir, "sdkplugin")
	cmd := exec.Command(goCommand(), "build", "-o", sdkPlugin, "./tests/goplugins/sdkplugin")
	cmd.Dir = filepath.Join("..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./tests/goplugins/sdkplugin: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// syncBuffer collects go-plugin's client log (which carries the plugin's
// stderr) for failure messages.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{} // closed and replaced on every write
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wrote != nil {
		close(b.wrote)
	}
	b.wrote = make(chan struct{})
	return b.buf.Write(p)
}

// waitFor waits until the buffer contains s.
func (b *syncBuffer) waitFor(ctx context.Context, s string) error {
	for {
		b.mu.Lock()
		found := strings.Contains(b.buf.String(), s)
		if b.wrote == nil {
			b.wrote = make(chan struct{})
		}
		wake := b.wrote
		b.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("%q never written: %w", s, ctx.Err())
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testPlugin struct {
	*plugvisortest.Plugin
	log *syncBuffer
}

// bothTLS runs f with go-plugin's AutoMTLS off and on.
func bothTLS(t *testing.T, f func(t *testing.T, autoMTLS bool)) {
	for _, on := range []bool{false, true} {
		name := "plaintext"
		if on {
			name = "automtls"
		}
		t.Run(name, func(t *testing.T) { f(t, on) })
	}
}

type startOptions struct {
	mode   string
	host   *plugvisortest.Host
	env    []string
	noKill bool
}

func start(t *testing.T, autoMTLS bool, o startOptions) *testPlugin {
	t.Helper()
	buf := &syncBuffer{}
	cmd := exec.Command(sdkPlugin)
	cmd.Env = append(os.Environ(), "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t), "PLUGVISOR_TEST_SDK_MODE="+o.mode)
	cmd.Env = append(cmd.Env, o.env...)
	p, err := plugvisortest.Start(plugvisortest.Config{
		Cmd:      cmd,
		AutoMTLS: autoMTLS,
		Host:     o.host,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Debug, Output: buf}),
	})
	if err != nil {
		t.Fatalf("%v\nhost log:\n%s", err, buf.String())
	}
	tp := &testPlugin{Plugin: p, log: buf}
	if !o.noKill {
		t.Cleanup(p.Kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host log:\n%s", buf.String())
		}
	})
	return tp
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// activate starts the full test plugin and activates it with config.
func activate(t *testing.T, autoMTLS bool, config string, o startOptions) *testPlugin {
	t.Helper()
	p := start(t, autoMTLS, o)
	resp, err := p.Activate(ctxFor(t), "sdk-test", config)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRefused() != nil {
		t.Fatalf("OnActivate refused: %q", resp.GetRefused().GetMessage())
	}
	return p
}

// getJSON calls the plugin's HTTP handler and decodes a JSON answer.
func (p *testPlugin) do(t *testing.T, method, target string, body io.Reader, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxFor(t), method, "http://plugin.test"+target, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: p}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON: %v", method, target, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

func TestImplementedListsOnlyTheHooksThePluginHas(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		for _, tc := range []struct {
			mode        string
			hooks       []string
			services    []string
			notServices []string
		}{
			{"full", []string{"OnActivate", "OnConfigurationChange", "OnDeactivate", "ServeHTTP"},
				[]string{"plugvisor.v1.Http", "chat.v1.MessageHooks"}, nil},
			{"partial", []string{"OnConfigurationChange"}, nil, []string{"plugvisor.v1.Http", "chat.v1.MessageHooks"}},
			{"bare", nil, nil, []string{"plugvisor.v1.Http", "chat.v1.MessageHooks"}},
		} {
			t.Run(tc.mode, func(t *testing.T) {
				p := start(t, autoMTLS, startOptions{mode: tc.mode})
				resp, err := p.Activate(ctxFor(t), "sdk-test", `{}`)
				if err != nil || resp.GetRefused() != nil {
					t.Fatalf("activation: %v %v", resp, err)
				}
				impl := p.Implemented()
				hooks := slices.Clone(impl.GetHooks())
				slices.Sort(hooks)
				if !slices.Equal(hooks, tc.hooks) {
					t.Errorf("hooks = %q, want %q", impl.GetHooks(), tc.hooks)
				}
				services := impl.GetServices()
				if !slices.IsSorted(services) {
					t.Errorf("services not sorted: %q", services)
				}
				for _, want := range append([]string{"plugin.GRPCBroker", "plugvisor.v1.Lifecycle", "grpc.health.v1.Health", "plugin.GRPCController"}, tc.services...) {
					if !slices.Contains(services, want) {
						t.Errorf("services %q lack %q", services, want)
					}
				}
				for _, not := range tc.notServices {
					if slices.Contains(services, not) {
						t.Errorf("services %q list %q, which this plugin does not serve", services, not)
					}
				}
			})
		}
	})
}

func TestOnActivateRefusalCarriesThePluginsMessage(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := start(t, autoMTLS, startOptions{})
		resp, err := p.Activate(ctxFor(t), "sdk-test", `{"refuse": "greeting must not be empty"}`)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetRefused().GetMessage(); got != "greeting must not be empty" {
			t.Errorf("refusal = %q (refused: %v), want the plugin's error text", got, resp.GetRefused() != nil)
		}
	})
}

type configView struct {
	Settings struct {
		Greeting string `json:"greeting"`
	} `json:"settings"`
	Changes           int `json:"changes"`
	HostConfiguration struct {
		Greeting string `json:"greeting"`
	} `json:"host_configuration"`
	Fetched map[string]any `json:"fetched"`
}

func TestConfigurationIsDecodedAndChanged(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{"greeting": "hi", "unused": 7}`, startOptions{})
		ctx := ctxFor(t)
		var v configView
		p.do(t, "GET", "/config", nil, &v)
		if v.Settings.Greeting != "hi" || v.HostConfiguration.Greeting != "hi" || v.Fetched["greeting"] != "hi" {
			t.Fatalf("after activation: %+v, want greeting hi everywhere", v)
		}

		resp, err := p.ChangeConfiguration(ctx, `{"greeting": "hello"}`)
		if err != nil || resp.GetRefused() != nil {
			t.Fatalf("change: %v %v", resp, err)
		}
		v = configView{}
		p.do(t, "GET", "/config", nil, &v)
		if v.Settings.Greeting != "hello" || v.Changes != 1 || v.HostConfiguration.Greeting != "hello" || v.Fetched["greeting"] != "hello" {
			t.Errorf("after the change: %+v, want greeting hello everywhere and 1 change", v)
		}
		if _, err := p.Host.WaitLog(ctx, func(r plugvisortest.LogRecord) bool {
			return r.Message == "configuration changed" && r.Fields["greeting"] == "hello"
		}); err != nil {
			t.Error(err)
		}

		resp, err = p.ChangeConfiguration(ctx, `{"greeting": "yo", "refuse": "yo is too casual"}`)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetRefused().GetMessage() != "yo is too casual" {
			t.Errorf("refusal = %v, want the plugin's message", resp.GetRefused())
		}
		v = configView{}
		p.do(t, "GET", "/config", nil, &v)
		if v.Settings.Greeting != "hello" || v.Changes != 1 || v.HostConfiguration.Greeting != "hello" {
			t.Errorf("after a refused change: %+v, want the previous configuration kept", v)
		}
	})
}

type hostErr struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

func TestKeyValueRoundTripsAndLimits(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		host := plugvisortest.NewHost()
		host.ListPage = 7
		host.MaxValueBytes = 16
		p := activate(t, autoMTLS, `{}`, startOptions{host: host})

		var set struct{ Stored int }
		if code := p.do(t, "POST", "/kv/set?key=k1", strings.NewReader("v1"), &set); code != 200 || set.Stored != 2 {
			t.Fatalf("set: %d %+v", code, set)
		}
		if v, ok := host.Value("k1"); !ok || string(v) != "v1" {
			t.Errorf("the host holds %q (%v) under k1, want v1", v, ok)
		}
		var get struct {
			Found bool
			Value string
		}
		p.do(t, "GET", "/kv/get?key=k1", nil, &get)
		if !get.Found || get.Value != "v1" {
			t.Errorf("get k1 = %+v, want found v1", get)
		}
		get.Found, get.Value = true, "?"
		p.do(t, "GET", "/kv/get?key=nope", nil, &get)
		if get.Found || get.Value != "" {
			t.Errorf("get of a missing key = %+v, want not found", get)
		}

		// 25 keys under a prefix take 4 pages of 7.
		var want []string
		for i := 0; i < 25; i++ {
			k := fmt.Sprintf("p/%02d", i)
			host.SetValue(k, []byte("x"))
			want = append(want, k)
		}
		host.SetValue("q", []byte("not under p/"))
		var list struct{ Keys []string }
		p.do(t, "GET", "/kv/list?prefix=p/", nil, &list)
		if !slices.Equal(list.Keys, want) {
			t.Errorf("list p/ = %q, want %q", list.Keys, want)
		}
		if n := host.Calls(plugvisorv1.KeyValue_List_FullMethodName); n != 4 {
			t.Errorf("List was called %d times, want 4 pages", n)
		}

		cas := func(query string) bool {
			t.Helper()
			var r struct{ Swapped bool }
			if code := p.do(t, "POST", "/kv/cas?key=c"+query, nil, &r); code != 200 {
				t.Fatalf("cas %s: status %d", query, code)
			}
			return r.Swapped
		}
		steps := []struct {
			query string
			want  bool
			value string // "" with exists false: absent
			exist bool
		}{
			{"&value=1", true, "1", true},             // absent -> 1
			{"&value=1", false, "1", true},            // not absent any more
			{"&expected=1&value=2", true, "2", true},  // 1 -> 2
			{"&expected=1&value=3", false, "2", true}, // not 1
			{"&expected=2", true, "", false},          // 2 -> deleted
			{"&value=", true, "", true},               // absent -> empty value
			{"&expected=", true, "", false},           // empty -> deleted
		}
		for _, s := range steps {
			if got := cas(s.query); got != s.want {
				t.Errorf("cas %s: swapped %v, want %v", s.query, got, s.want)
			}
			v, ok := host.Value("c")
			if ok != s.exist || string(v) != s.value {
				t.Errorf("after cas %s the host holds %q (exists %v), want %q (exists %v)", s.query, v, ok, s.value, s.exist)
			}
		}

		var del struct{ Existed bool }
		p.do(t, "POST", "/kv/delete?key=k1", nil, &del)
		if !del.Existed {
			t.Error("delete k1: existed false, want true")
		}
		p.do(t, "POST", "/kv/delete?key=k1", nil, &del)
		if del.Existed {
			t.Error("second delete k1: existed true, want false")
		}

		var e hostErr
		if code := p.do(t, "POST", "/kv/set?key=big", strings.NewReader(strings.Repeat("x", 17)), &e); code != http.StatusBadGateway {
			t.Fatalf("set over the limit: status %d, want the plugin's 502", code)
		}
		if e.Code != codes.ResourceExhausted.String() || !strings.Contains(e.Error, "the limit is 16") || !strings.Contains(e.Error, `KeyValue.Set "big"`) {
			t.Errorf("set over the limit: %+v, want ResourceExhausted naming the call and the limit", e)
		}
		p.do(t, "POST", "/kv/set?key=", strings.NewReader("x"), &e)
		if e.Code != codes.InvalidArgument.String() {
			t.Errorf("set with an empty key: %+v, want InvalidArgument", e)
		}
		if _, ok := host.Value("big"); ok {
			t.Error("the value over the limit was stored")
		}
		assertTransport(t, host, autoMTLS)
	})
}

func TestLogRecordsArriveWithLevelAndFields(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{"greeting": "hi"}`, startOptions{})
		if code := p.do(t, "POST", "/log", nil, nil); code != http.StatusNoContent {
			t.Fatalf("POST /log: %d", code)
		}
		// The handler logs before it answers, and each record is a call
		// that returned, so all are there now.
		want := []plugvisortest.LogRecord{
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_INFO, Message: "activated",
				Fields: map[string]string{"plugin_id": "sdk-test", "greeting": "hi", "host_version": plugvisortest.HostVersion}},
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_TRACE, Message: "trace line", Fields: map[string]string{"n": "1"}},
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_DEBUG, Message: "debug line", Fields: map[string]string{"flag": "true"}},
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_INFO, Message: "info line",
				Fields: map[string]string{"component": "sdk-test", "req.id": "42", "req.user.name": "ada"}},
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_WARN, Message: "warn line", Fields: map[string]string{"err": "disk almost full"}},
			{Level: plugvisorv1.LogLevel_LOG_LEVEL_ERROR, Message: "error line", Fields: map[string]string{"took": "1.5s"}},
		}
		got := p.Host.Logs()
		if len(got) != len(want) {
			t.Fatalf("got %d records, want %d:\n%v", len(got), len(want), got)
		}
		for i := range want {
			if got[i].String() != want[i].String() {
				t.Errorf("record %d = %v\nwant        %v", i, got[i], want[i])
			}
		}
	})
}

func TestHTTPRequestLooksAsNetHTTPWouldBuildIt(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{}`, startOptions{})
		type view struct {
			Method        string              `json:"method"`
			Path          string              `json:"path"`
			RawPath       string              `json:"raw_path"`
			RawQuery      string              `json:"raw_query"`
			RequestURI    string              `json:"request_uri"`
			Host          string              `json:"host"`
			RemoteAddr    string              `json:"remote_addr"`
			Proto         string              `json:"proto"`
			ProtoMajor    int                 `json:"proto_major"`
			Header        map[string][]string `json:"header"`
			ContentLength int64               `json:"content_length"`
			TLS           bool                `json:"tls"`
			MountPath     string              `json:"mount_path"`
			QueryA        []string            `json:"query_a"`
			Body          string              `json:"body"`
		}
		req, _ := http.NewRequestWithContext(ctxFor(t), "POST", "https://chat.example/request/a%2Fb?a=1&a=2&b=%20x", strings.NewReader("hello"))
		req.Header.Add("X-Test", "one")
		req.Header.Add("X-Test", "two")
		resp, err := (&http.Client{Transport: p}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v view
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		if v.Method != "POST" || v.Path != "/request/a/b" || v.RawPath != "/request/a%2Fb" || v.RawQuery != "a=1&a=2&b=%20x" ||
			v.RequestURI != "/request/a%2Fb?a=1&a=2&b=%20x" || !slices.Equal(v.QueryA, []string{"1", "2"}) {
			t.Errorf("method, path or query wrong: %+v", v)
		}
		if v.Host != "chat.example" || v.Header["Host"] != nil {
			t.Errorf("Host = %q, header Host %q: want Request.Host set and the header removed, as net/http does", v.Host, v.Header["Host"])
		}
		if !slices.Equal(v.Header["X-Test"], []string{"one", "two"}) {
			t.Errorf("X-Test = %q, want both values in order, canonical name", v.Header["X-Test"])
		}
		if v.RemoteAddr != "192.0.2.10:40000" || v.Proto != "HTTP/1.1" || v.ProtoMajor != 1 || !v.TLS || v.MountPath != "/plugins/sdk-test" {
			t.Errorf("remote address, protocol, TLS or mount path wrong: %+v", v)
		}
		if v.ContentLength != 5 || v.Body != "hello" {
			t.Errorf("content length %d, body %q; want 5, hello", v.ContentLength, v.Body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("response Content-Type = %q", ct)
		}
	})
}

// assertTransport checks that the brokered host API connection is mutual
// TLS exactly when AutoMTLS is on.
func assertTransport(t *testing.T, host *plugvisortest.Host, autoMTLS bool) {
	t.Helper()
	total := 0
	for _, m := range []string{plugvisorv1.KeyValue_Get_FullMethodName, plugvisorv1.KeyValue_Set_FullMethodName,
		plugvisorv1.KeyValue_Delete_FullMethodName, plugvisorv1.KeyValue_List_FullMethodName,
		plugvisorv1.KeyValue_CompareAndSet_FullMethodName, plugvisorv1.Log_Write_FullMethodName,
		plugvisorv1.Configuration_Get_FullMethodName} {
		total += host.Calls(m)
	}
	want := 0
	if autoMTLS {
		want = total
	}
	if got := host.TLSCalls(); total == 0 || got != want {
		t.Errorf("%d of %d host API calls came over verified TLS, want %d", got, total, want)
	}
}

// openHTTP starts a raw plugvisor.v1.Http call with a head.
func openHTTP(t *testing.T, ctx context.Context, p *testPlugin, method, path, query string) plugvisorv1.Http_ServeHTTPClient {
	t.Helper()
	stream, err := p.HTTP.ServeHTTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&plugvisorv1.HttpRequestPart{Part: &plugvisorv1.HttpRequestPart_Head{Head: &plugvisorv1.HttpRequestHead{
		Method: method, Path: path, Query: query, PluginId: "sdk-test", MountPath: "/plugins/sdk-test",
		HttpVersion: "HTTP/1.1", Scheme: "http", RemoteAddr: "127.0.0.1:5000",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func sendBody(t *testing.T, stream plugvisorv1.Http_ServeHTTPClient, b []byte) {
	t.Helper()
	if err := stream.Send(&plugvisorv1.HttpRequestPart{Part: &plugvisorv1.HttpRequestPart_Body{Body: b}}); err != nil {
		t.Fatal(err)
	}
}

// describe names a response part for comparisons: "head 200", "body ...", "flush".
func describe(part *plugvisorv1.HttpResponsePart) string {
	switch x := part.GetPart().(type) {
	case *plugvisorv1.HttpResponsePart_Head:
		return fmt.Sprintf("head %d", x.Head.GetStatus())
	case *plugvisorv1.HttpResponsePart_Body:
		return "body " + string(x.Body)
	case *plugvisorv1.HttpResponsePart_Flush:
		return "flush"
	}
	return "empty part"
}

func expectPart(t *testing.T, stream plugvisorv1.Http_ServeHTTPClient, want string) *plugvisorv1.HttpResponsePart {
	t.Helper()
	part, err := stream.Recv()
	if err != nil {
		t.Fatalf("want %q, the call ended: %v", want, err)
	}
	if got := describe(part); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	return part
}

func expectEnd(t *testing.T, stream plugvisorv1.Http_ServeHTTPClient, code codes.Code) {
	t.Helper()
	part, err := stream.Recv()
	if err == nil {
		t.Fatalf("got %q, want the call to end", describe(part))
	}
	if code == codes.OK {
		if err != io.EOF {
			t.Fatalf("the call ended with %v, want OK", err)
		}
		return
	}
	if err == io.EOF || status.Code(err) != code {
		t.Fatalf("the call ended with %v, want status %v", err, code)
	}
}

func TestHTTPBodiesStreamBothWays(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{}`, startOptions{})

		t.Run("large upload", func(t *testing.T) {
			body := make([]byte, 8<<20+5)
			_, _ = rand.Read(body)
			sum := sha256.Sum256(body)
			var r struct {
				Bytes  int
				Sha256 string
			}
			if code := p.do(t, "POST", "/sha256", bytes.NewReader(body), &r); code != 200 {
				t.Fatalf("status %d", code)
			}
			if r.Bytes != len(body) || r.Sha256 != hex.EncodeToString(sum[:]) {
				t.Errorf("the plugin read %d bytes with SHA-256 %s, want %d and %x", r.Bytes, r.Sha256, len(body), sum)
			}
		})

		t.Run("large download in bounded parts", func(t *testing.T) {
			const size = 1<<20 + 3
			stream := openHTTP(t, ctxFor(t), p, "GET", "/big", fmt.Sprintf("size=%d", size))
			_ = stream.CloseSend()
			expectPart(t, stream, "head 200")
			var got []byte
			parts := 0
			for {
				part, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b := part.GetBody()
				if len(b) == 0 || len(b) > plugvisor.MaxBodyChunk {
					t.Fatalf("part %d: %q with %d body bytes; want 1..%d", parts, describe(part)[:4], len(b), plugvisor.MaxBodyChunk)
				}
				got = append(got, b...)
				parts++
			}
			if len(got) != size || got[0] != 'a' || got[size-1] != byte('a'+(size-1)%26) {
				t.Errorf("got %d bytes in %d parts, want %d", len(got), parts, size)
			}
			if parts < size/plugvisor.MaxBodyChunk {
				t.Errorf("%d parts for %d bytes", parts, size)
			}
		})

		// Each chunk comes back before the next is sent: the handler reads
		// the body as it arrives and its writes and flushes go out at once.
		t.Run("full duplex echo", func(t *testing.T) {
			stream := openHTTP(t, ctxFor(t), p, "POST", "/echo", "")
			sendBody(t, stream, []byte("ping-1"))
			expectPart(t, stream, "head 200")
			expectPart(t, stream, "body ping-1")
			expectPart(t, stream, "flush")
			sendBody(t, stream, []byte("ping-2"))
			expectPart(t, stream, "body ping-2")
			expectPart(t, stream, "flush")
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			expectEnd(t, stream, codes.OK)
		})
	})
}

func TestHTTPStreamingResponseWithFlushes(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{}`, startOptions{})
		stream := openHTTP(t, ctxFor(t), p, "GET", "/stream", "n=3")
		_ = stream.CloseSend()
		head := expectPart(t, stream, "head 200")
		var ct string
		for _, h := range head.GetHead().GetHeaders() {
			if h.GetName() == "content-type" {
				ct = string(h.GetValue())
			}
		}
		if ct != "text/event-stream" {
			t.Errorf("content-type = %q, want the handler's text/event-stream (header names lower case)", ct)
		}
		for i := 0; i < 3; i++ {
			expectPart(t, stream, fmt.Sprintf("body data: event %d\n\n", i))
			expectPart(t, stream, "flush")
		}
		expectEnd(t, stream, codes.OK)
	})
}

func TestHTTPCancelReachesTheHandlersContext(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{}`, startOptions{})
		ctx, cancel := context.WithCancel(ctxFor(t))
		defer cancel()
		stream := openHTTP(t, ctx, p, "GET", "/wait", "")
		_ = stream.CloseSend()
		// The handler flushes its head, then waits for its context.
		expectPart(t, stream, "head 200")
		expectPart(t, stream, "flush")
		if logs := p.Host.Logs(); slices.ContainsFunc(logs, func(r plugvisortest.LogRecord) bool { return r.Message == "request context ended" }) {
			t.Fatal("the handler's context ended before the cancel")
		}
		cancel()
		r, err := p.Host.WaitLog(ctxFor(t), func(r plugvisortest.LogRecord) bool { return r.Message == "request context ended" })
		if err != nil {
			t.Fatal(err)
		}
		if r.Fields["error"] != context.Canceled.Error() || r.Fields["path"] != "/wait" {
			t.Errorf("record %v, want the handler to see context.Canceled", r)
		}
	})
}

func TestHTTPPanicAbortsTheCall(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		p := activate(t, autoMTLS, `{}`, startOptions{})

		stream := openHTTP(t, ctxFor(t), p, "GET", "/panic", "after_head=1")
		_ = stream.CloseSend()
		expectPart(t, stream, "head 200")
		expectPart(t, stream, "body partial body")
		expectPart(t, stream, "flush")
		expectEnd(t, stream, codes.Internal)

		stream = openHTTP(t, ctxFor(t), p, "GET", "/panic", "")
		_ = stream.CloseSend()
		expectEnd(t, stream, codes.Internal)

		// One request's panic does not take the plugin down.
		var v configView
		if code := p.do(t, "GET", "/config", nil, &v); code != 200 {
			t.Errorf("after the panics: GET /config = %d", code)
		}
		// The plugin's stderr reaches go-plugin's log asynchronously.
		if err := p.log.waitFor(ctxFor(t), "sdkplugin: boom"); err != nil {
			t.Errorf("the panic was not logged on the plugin's stderr: %v", err)
		}
	})
}

func TestEmbeddersServiceAndDeactivation(t *testing.T) {
	bothTLS(t, func(t *testing.T, autoMTLS bool) {
		marker := filepath.Join(t.TempDir(), "marker")
		p := activate(t, autoMTLS, `{"greeting": "[hi]"}`, startOptions{env: []string{"PLUGVISOR_TEST_MARKER=" + marker}, noKill: true})
		ctx := ctxFor(t)
		resp, err := chatv1.NewMessageHooksClient(p.Conn).MessageWillBePosted(ctx, &chatv1.MessageWillBePostedRequest{
			Message: &chatv1.Message{Channel: "town-square", UserId: "u1", Text: "hello"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetMessage().GetText(); got != "[hi] hello" {
			t.Errorf("MessageWillBePosted text = %q, want \"[hi] hello\"", got)
		}
		if err := p.Deactivate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Host.WaitLog(ctx, func(r plugvisortest.LogRecord) bool { return r.Message == "deactivating" }); err != nil {
			t.Error(err)
		}
		// go-plugin's Kill: the controller's Shutdown makes Serve return, so
		// the code after it runs and the process exits before the 2 s limit.
		p.Kill()
		if got, err := os.ReadFile(marker); err != nil || string(got) != "stopped" {
			t.Errorf("marker = %q (%v): the code after Serve did not run", got, err)
		}
		if strings.Contains(p.log.String(), "plugin failed to exit gracefully") {
			t.Error("go-plugin had to SIGKILL the plugin")
		}
	})
}

// As plugvisor stops a plugin after the controller: SIGTERM makes Serve
// return nil, the socket is removed and the process exits 0.
func TestSIGTERMStopsServeCleanly(t *testing.T) {
	sockDir := plugvisortest.SocketDir(t)
	marker := filepath.Join(t.TempDir(), "marker")
	cmd := exec.Command(sdkPlugin)
	cmd.Env = append(os.Environ(),
		plugvisor.Handshake.MagicCookieKey+"="+plugvisor.Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=1",
		"PLUGIN_UNIX_SOCKET_DIR="+sockDir,
		"PLUGVISOR_TEST_MARKER="+marker,
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no handshake line: %v\nstderr:\n%s", err, stderr.String())
	}
	if parts := strings.Split(strings.TrimSpace(line), "|"); len(parts) < 5 || parts[2] != "unix" || parts[4] != "grpc" {
		t.Fatalf("handshake line %q, want 1|1|unix|PATH|grpc|", line)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit status 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\nstderr:\n%s", stderr.String())
	}
	if got, err := os.ReadFile(marker); err != nil || string(got) != "stopped" {
		t.Errorf("marker = %q (%v): Serve did not return", got, err)
	}
	if left, _ := os.ReadDir(sockDir); len(left) != 0 {
		t.Errorf("the socket was left behind: %v", left)
	}
}

// Without the host's cookie the binary says it is a plugin and exits 1.
func TestRunByHandSaysItIsAPlugin(t *testing.T) {
	cmd := exec.Command(sdkPlugin)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MATTERMOST_PLUGIN=") })
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "This binary is a plugin") {
		t.Errorf("exit %v, output %q; want status 1 and go-plugin's message", err, out)
	}
}

// A host that offers no host API (broker id 0): the kv calls fail with
// ErrNoHostAPI and log records go to the plugin's stderr, which go-plugin's
// host reads.
func TestWithoutAHostAPI(t *testing.T) {
	p := start(t, false, startOptions{})
	ctx := ctxFor(t)
	resp, err := p.Lifecycle.OnActivate(ctx, &plugvisorv1.OnActivateRequest{PluginId: "sdk-test", ConfigurationJson: `{"greeting": "hi"}`})
	if err != nil || resp.GetRefused() != nil {
		t.Fatalf("activation without a host API: %v %v", resp, err)
	}
	var e hostErr
	if code := p.do(t, "GET", "/kv/get?key=k", nil, &e); code != http.StatusBadGateway || e.Error != plugvisor.ErrNoHostAPI.Error() {
		t.Errorf("kv get: %d %+v, want ErrNoHostAPI", code, e)
	}
	if code := p.do(t, "POST", "/log", nil, nil); code != http.StatusNoContent {
		t.Fatalf("POST /log: %d", code)
	}
	if err := p.log.waitFor(ctx, "disk almost full"); err != nil {
		t.Fatalf("the records did not reach the plugin's stderr: %v", err)
	}
	if len(p.Host.Logs()) != 0 {
		t.Errorf("records reached a host API that was never offered: %v", p.Host.Logs())
	}
}
