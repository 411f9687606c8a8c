package main

// The plugvisor.v1 scenarios: go-plugin's host playing plugvisor's part for
// a plugin that speaks plugvisor.v1 (the Go SDK's tests/goplugins/sdkplugin),
// so plugvisor's host API and hook numbers have a go-plugin peer.
//
//   hostapi: the plugin calls the host back through go-plugin's broker
//            (broker.Dial of an id the host serves with AcceptAndServe, the
//            shape of go-plugin's examples/bidirectional): kv Get and Set
//            against an in-memory map in this process, timed by the plugin.
//   hooks:   the host calls a unary hook on the plugin
//            (Lifecycle/OnConfigurationChange), alternating with a bare
//            grpc.health.v1 Check on the same connection.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// hostSession is what the "hooks" entry dispenses: the host's side of the
// plugin's connection and broker.
type hostSession struct {
	broker *plugin.GRPCBroker
	conn   *grpc.ClientConn
}

// activated is a plugin that has been activated with a host API.
type activated struct {
	session *hostSession
	host    *plugvisortest.Host
	hooks   []string
	// lifecycle is false for a plugin that does not serve plugvisor.v1
	// (Implemented answered UNIMPLEMENTED): it was only dispensed.
	lifecycle bool
	// activateMs: Dispense to OnActivate answered (to Implemented answered
	// for a plugin without lifecycle); implementedMs and onActivateMs are
	// those calls alone.
	activateMs    float64
	implementedMs float64
	onActivateMs  float64
}

// activate does what plugvisor does after the first healthy check:
// Implemented, the host API served on a new broker id, OnActivate with it.
func activate(cp plugin.ClientProtocol, config string) (*activated, error) {
	a, err := activateAny(cp, config)
	if err == nil && !a.lifecycle {
		err = errors.New("Implemented: UNIMPLEMENTED (does the plugin speak plugvisor.v1?)")
	}
	return a, err
}

// activateAny is activate for any plugin: one that does not serve
// plugvisor.v1.Lifecycle is done once Implemented has answered UNIMPLEMENTED
// (plugvisor asks every plugin, and activates such a plugin without hooks).
func activateAny(cp plugin.ClientProtocol, config string) (*activated, error) {
	t0 := time.Now()
	raw, err := cp.Dispense("hooks")
	if err != nil {
		return nil, fmt.Errorf("dispense: %w", err)
	}
	s := raw.(*hostSession)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lc := plugvisorv1.NewLifecycleClient(s.conn)
	t1 := time.Now()
	impl, err := lc.Implemented(ctx, &plugvisorv1.ImplementedRequest{})
	implementedMs := ms(time.Since(t1))
	if status.Code(err) == codes.Unimplemented {
		return &activated{session: s, activateMs: ms(time.Since(t0)), implementedMs: implementedMs}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("Implemented (does the plugin speak plugvisor.v1?): %w", err)
	}
	if !slices.Contains(impl.GetServices(), "plugin.GRPCBroker") {
		return nil, fmt.Errorf("the plugin does not list plugin.GRPCBroker among its services %q", impl.GetServices())
	}
	host := plugvisortest.NewHost()
	id := s.broker.NextId()
	go s.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		srv := grpc.NewServer(opts...)
		host.Register(srv)
		return srv
	})
	host.SetConfiguration(config)
	t2 := time.Now()
	resp, err := lc.OnActivate(ctx, &plugvisorv1.OnActivateRequest{
		PluginId: "gohost", ConfigurationJson: config, HostApiBrokerId: id, HostVersion: "gohost (go-plugin v1.7.0)",
	})
	onActivateMs := ms(time.Since(t2))
	if err != nil {
		return nil, fmt.Errorf("OnActivate: %w", err)
	}
	if r := resp.GetRefused(); r != nil {
		return nil, fmt.Errorf("OnActivate refused: %s", r.GetMessage())
	}
	return &activated{session: s, host: host, hooks: impl.GetHooks(), lifecycle: true, activateMs: ms(time.Since(t0)),
		implementedMs: implementedMs, onActivateMs: onActivateMs}, nil
}

// serveHTTP makes one plugvisor.v1.Http call with an empty body and returns
// the status and the whole response body.
func serveHTTP(ctx context.Context, conn *grpc.ClientConn, method, path, query string) (int, []byte, error) {
	stream, err := plugvisorv1.NewHttpClient(conn).ServeHTTP(ctx)
	if err != nil {
		return 0, nil, err
	}
	err = stream.Send(&plugvisorv1.HttpRequestPart{Part: &plugvisorv1.HttpRequestPart_Head{Head: &plugvisorv1.HttpRequestHead{
		Method: method, Path: path, Query: query, PluginId: "gohost", MountPath: "/plugins/gohost",
		HttpVersion: "HTTP/1.1", Scheme: "http", RemoteAddr: "127.0.0.1:1",
	}}})
	if err == nil {
		err = stream.CloseSend()
	}
	if err != nil {
		return 0, nil, err
	}
	code := 0
	var body []byte
	for {
		part, err := stream.Recv()
		if err == io.EOF {
			return code, body, nil
		}
		if err != nil {
			return code, body, err
		}
		if h := part.GetHead(); h != nil {
			code = int(h.GetStatus())
		}
		body = append(body, part.GetBody()...)
	}
}

// benchKV asks the plugin to time n kv calls of one kind.
func benchKV(conn *grpc.ClientConn, op string, n, size int) ([]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code, body, err := serveHTTP(ctx, conn, "GET", "/bench/kv", fmt.Sprintf("op=%s&n=%d&size=%d", op, n, size))
	if err != nil {
		return nil, fmt.Errorf("GET /bench/kv: %w", err)
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /bench/kv: status %d: %s", code, body)
	}
	var res struct {
		LatenciesUs []float64 `json:"latencies_us"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("GET /bench/kv: %w", err)
	}
	lat := make([]float64, len(res.LatenciesUs))
	for i, us := range res.LatenciesUs {
		lat[i] = math.Round(us) / 1000 // µs resolution, as ms()
	}
	return lat, nil
}

func cmdHostAPI(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("hostapi", "hostapi", "Start a plugvisor.v1 plugin (tests/goplugins/sdkplugin), serve it an in-memory host API on a\n"+
		"go-plugin broker id and activate it with that id; the plugin then makes --count KeyValue.Get and\n"+
		"--count KeyValue.Set calls through broker.Dial, timing each (GET /bench/kv); print their latencies (ms).", stderr, &bf, 1000)
	size := fs.Int("value-bytes", 64, "size of the value Set writes and Get reads")
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 || *size < 0 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
	}
	type hostAPIResult struct {
		Run        *cycle  `json:"run"`
		Count      int     `json:"count"`
		ValueBytes int     `json:"value_bytes"`
		AutoMTLS   bool    `json:"automtls"`
		ActivateMs float64 `json:"activate_ms"`
		GetMs      stats   `json:"get_ms"`
		SetMs      stats   `json:"set_ms"`
		// Calls the in-memory host served: a check that they crossed.
		HostGets int    `json:"host_gets"`
		HostSets int    `json:"host_sets"`
		Error    string `json:"error,omitempty"`
	}
	c := bf.startCycle(argv, stderr)
	res := hostAPIResult{Run: c, Count: bf.count, ValueBytes: *size, AutoMTLS: bf.autoMTLS}
	var err error
	if c.Error != "" {
		err = errors.New(c.Error)
	} else {
		err = func() error {
			a, err := activate(c.protocolCli, "{}")
			if err != nil {
				return err
			}
			res.ActivateMs = a.activateMs
			get, err := benchKV(a.session.conn, "get", bf.count, *size)
			if err != nil {
				return err
			}
			set, err := benchKV(a.session.conn, "set", bf.count, *size)
			if err != nil {
				return err
			}
			res.GetMs, res.SetMs = summarize(get), summarize(set)
			res.HostGets = a.host.Calls(plugvisorv1.KeyValue_Get_FullMethodName)
			res.HostSets = a.host.Calls(plugvisorv1.KeyValue_Set_FullMethodName)
			if res.HostGets < bf.count || res.HostSets < bf.count {
				return fmt.Errorf("the host served %d Gets and %d Sets, fewer than the %d each the plugin timed", res.HostGets, res.HostSets, bf.count)
			}
			return nil
		}()
	}
	return c.finish(stdout, bf.log, &res, &res.Error, err)
}

func cmdHooks(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("hooks", "hooks", "Start and activate a plugvisor.v1 plugin, then call Lifecycle/OnConfigurationChange --count times,\n"+
		"each followed by a grpc.health.v1 Check on the same connection; print both latencies (ms).\n"+
		"The hook's time includes what the plugin's hook does (tests/goplugins/sdkplugin: a JSON decode).", stderr, &bf, 1000)
	config := fs.String("config", `{"greeting": "bench"}`, "the configuration JSON sent with every OnConfigurationChange")
	argv, code := bf.parse(fs, args, stderr)
	if argv == nil {
		return code
	}
	type hooksResult struct {
		Run        *cycle  `json:"run"`
		Count      int     `json:"count"`
		AutoMTLS   bool    `json:"automtls"`
		ActivateMs float64 `json:"activate_ms"`
		Hook       string  `json:"hook"`
		HookMs     stats   `json:"hook_ms"`
		HealthMs   stats   `json:"health_ms"`
		Error      string  `json:"error,omitempty"`
	}
	c := bf.startCycle(argv, stderr)
	res := hooksResult{Run: c, Count: bf.count, AutoMTLS: bf.autoMTLS, Hook: "OnConfigurationChange"}
	var err error
	if c.Error != "" {
		err = errors.New(c.Error)
	} else {
		err = func() error {
			a, err := activate(c.protocolCli, *config)
			if err != nil {
				return err
			}
			res.ActivateMs = a.activateMs
			if !slices.Contains(a.hooks, "OnConfigurationChange") {
				return fmt.Errorf("the plugin's Implemented lists hooks %q, not OnConfigurationChange", a.hooks)
			}
			lc := plugvisorv1.NewLifecycleClient(a.session.conn)
			health := grpc_health_v1.NewHealthClient(a.session.conn)
			req := &plugvisorv1.OnConfigurationChangeRequest{ConfigurationJson: *config}
			check := &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName}
			hook := make([]float64, 0, bf.count)
			checks := make([]float64, 0, bf.count)
			ctx := context.Background()
			for i := 0; i < bf.count; i++ {
				t := time.Now()
				resp, err := lc.OnConfigurationChange(ctx, req)
				if err != nil {
					return fmt.Errorf("OnConfigurationChange: %w", err)
				}
				if r := resp.GetRefused(); r != nil {
					return fmt.Errorf("OnConfigurationChange refused: %s", r.GetMessage())
				}
				hook = append(hook, ms(time.Since(t)))
				t = time.Now()
				hr, err := health.Check(ctx, check)
				if err != nil {
					return fmt.Errorf("health check: %w", err)
				}
				if hr.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
					return fmt.Errorf("health check: %v", hr.GetStatus())
				}
				checks = append(checks, ms(time.Since(t)))
			}
			res.HookMs, res.HealthMs = summarize(hook), summarize(checks)
			return nil
		}()
	}
	return c.finish(stdout, bf.log, &res, &res.Error, err)
}

func init() {
	subcommands["hostapi"] = subcommand{"plugvisor.v1 host API round trip through go-plugin's broker: --count kv Get and Set timed by the plugin", cmdHostAPI}
	subcommands["hooks"] = subcommand{"plugvisor.v1 hook round trip: --count OnConfigurationChange calls, each beside a health Check", cmdHooks}
}
