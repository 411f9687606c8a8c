package plugvisor

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// Handshake is Mattermost's go-plugin handshake (protocol version 1, cookie
// MATTERMOST_PLUGIN), plugvisor's default. Serve uses it unless
// [WithHandshake] says otherwise.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "MATTERMOST_PLUGIN",
	MagicCookieValue: "Securely message teams, anywhere.",
}

// PluginName is the key of the SDK's entry in go-plugin's plugin set. A Go
// host that dispenses the plugin (plugin.ClientProtocol.Dispense) uses it.
const PluginName = "plugvisor"

// Option changes how [Serve] runs the plugin.
type Option func(*config)

type config struct {
	handshake plugin.HandshakeConfig
	registers []func(*grpc.Server)
	handler   http.Handler
	logger    hclog.Logger
	logLevel  slog.Leveler
}

// WithHandshake replaces [Handshake], for a host with its own magic cookie
// or protocol version.
func WithHandshake(h plugin.HandshakeConfig) Option {
	return func(c *config) { c.handshake = h }
}

// WithGRPC registers more gRPC services on the plugin's server before it
// starts, such as an embedder's own hooks:
//
//	plugvisor.WithGRPC(func(s *grpc.Server) { chatv1.RegisterMessageHooksServer(s, p) })
//
// They are listed in Implemented's services, so the host knows to call them.
// It may be given more than once.
func WithGRPC(register func(s *grpc.Server)) Option {
	return func(c *config) { c.registers = append(c.registers, register) }
}

// WithHandler serves the host's HTTP requests (plugvisor.v1.Http) with h.
// Without it, the plugin value serves them if it is an [http.Handler]; with
// it, h is used even then.
func WithHandler(h http.Handler) Option {
	return func(c *config) { c.handler = h }
}

// WithLogger sets the logger go-plugin and the SDK write their own lines to
// (panics, failed log deliveries). The default writes hclog JSON at Info
// level to the process's stderr, which plugvisor reads as structured logs.
// The plugin's own records go to [Host.Logger], not here.
func WithLogger(l hclog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithLogLevel sets the lowest level [Host.Logger] sends to the host. The
// default, [LevelTrace], sends everything and leaves filtering to the host;
// each record costs one call to the host.
func WithLogLevel(l slog.Leveler) Option {
	return func(c *config) { c.logLevel = l }
}

// Serve runs p as a plugvisor plugin until the host stops it, through
// go-plugin's plugin.Serve (gRPC only). It returns nil when the host stopped
// the plugin, by plugin.GRPCController/Shutdown (what plugvisor and
// go-plugin's Client.Kill call first) or by SIGTERM (what plugvisor sends
// next), so the code after Serve in main is the plugin's cleanup and the
// process exits 0. It returns an error when the plugin could not start
// serving (go-plugin logged why on stderr) or p is nil.
//
// Started by hand, without the host's magic cookie, the process prints that
// it is a plugin and exits 1 (go-plugin does this).
//
// Serve handles SIGTERM itself for as long as it runs; go-plugin ignores
// SIGINT.
func Serve(p any, opts ...Option) error {
	if p == nil {
		return errors.New("plugvisor: Serve needs a plugin value (a struct with the hooks it implements), got nil")
	}
	cfg := config{handshake: Handshake, logLevel: LevelTrace}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		// Made before plugin.Serve replaces os.Stderr with the pipe behind
		// plugin.GRPCStdio, so these lines reach the real stderr.
		cfg.logger = hclog.New(&hclog.LoggerOptions{
			Name:       "plugvisor-sdk",
			Level:      hclog.Info,
			Output:     os.Stderr,
			JSONFormat: true,
		})
	}
	handler := cfg.handler
	if handler == nil {
		handler, _ = p.(http.Handler)
	}

	srv := &server{
		plugin:   p,
		handler:  handler,
		logger:   cfg.logger,
		logLevel: cfg.logLevel,
		stderr:   os.Stderr,
	}
	gp := &goPlugin{srv: srv, registers: cfg.registers}

	var (
		mu         sync.Mutex
		grpcServer *grpc.Server
		terminated bool
	)
	newServer := func(o []grpc.ServerOption) *grpc.Server {
		o = append(o,
			grpc.ChainUnaryInterceptor(srv.unaryAfterActivation),
			grpc.ChainStreamInterceptor(srv.streamAfterActivation))
		s := grpc.NewServer(o...)
		mu.Lock()
		grpcServer = s
		stop := terminated
		mu.Unlock()
		if stop {
			s.Stop()
		}
		return s
	}

	// go-plugin leaves SIGTERM at Go's default (die at once, socket left
	// behind). Stopping the gRPC server instead takes the same way out of
	// plugin.Serve as the controller's Shutdown.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			cfg.logger.Info("stopping", "reason", "signal", "signal", sig.String())
			mu.Lock()
			terminated = true
			s := grpcServer
			mu.Unlock()
			if s != nil {
				s.Stop()
			}
		case <-done:
		}
	}()

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: cfg.handshake,
		Plugins:         plugin.PluginSet{PluginName: gp},
		GRPCServer:      newServer,
		Logger:          cfg.logger,
	})
	signal.Stop(sigs)
	close(done)
	srv.close()

	if !gp.registered.Load() {
		return errors.New("plugvisor: go-plugin did not start serving the plugin; its log on stderr says why")
	}
	return nil
}

// goPlugin is the SDK's entry in go-plugin's plugin set. Having a
// GRPCPlugin there is also what makes plugin.Serve announce "grpc".
type goPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv        *server
	registers  []func(*grpc.Server)
	registered atomic.Bool
}

// GRPCServer registers the SDK's services and the plugin's own. go-plugin
// calls it once, after its own services and before serving.
func (g *goPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	g.srv.broker = broker
	g.srv.grpcServer = s
	plugvisorv1.RegisterLifecycleServer(s, &lifecycleServer{srv: g.srv})
	if g.srv.handler != nil {
		plugvisorv1.RegisterHttpServer(s, &httpServer{srv: g.srv})
	}
	for _, register := range g.registers {
		register(s)
	}
	g.registered.Store(true)
	return nil
}

// GRPCClient is the host side, which the SDK does not implement.
func (g *goPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, errors.New("plugvisor: the SDK implements the plugin side only")
}
