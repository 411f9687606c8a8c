package plugvisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// Activator is implemented by a plugin with an OnActivate hook.
//
// The host calls OnActivate once per plugin process, after the process is
// healthy and before anything else (plugvisor calls it on every plugin; the
// hook is optional). host is the plugin's way to its host: keep it in a field.
// A non-nil error refuses to run: the host stops the plugin, does not restart
// it, and shows the error's text to the operator.
type Activator interface {
	OnActivate(ctx context.Context, host *Host) error
}

// ConfigurationChanger is implemented by a plugin with an
// OnConfigurationChange hook.
//
// The host calls it when the operator changes the plugin's configuration;
// config is the new one ([Host.Configuration] is still the old one until the
// hook returns nil). A non-nil error refuses the change: the previous
// configuration stays in force, and the error's text is what the operator
// sees.
type ConfigurationChanger interface {
	OnConfigurationChange(ctx context.Context, config Configuration) error
}

// Deactivator is implemented by a plugin with an OnDeactivate hook.
//
// The host calls it before it stops the plugin (deactivation or host
// shutdown); the process is stopped right after. A non-nil error cannot
// stop that: it is logged to the host at error level.
type Deactivator interface {
	OnDeactivate(ctx context.Context) error
}

// Hook names, as Implemented reports them.
const (
	hookOnActivate            = "OnActivate"
	hookOnDeactivate          = "OnDeactivate"
	hookOnConfigurationChange = "OnConfigurationChange"
	hookServeHTTP             = "ServeHTTP"
)

// server is the state one plugin process shares between its services.
type server struct {
	plugin   any
	handler  http.Handler
	logger   hclog.Logger
	logLevel slog.Leveler
	stderr   io.Writer

	// Set by goPlugin.GRPCServer before serving starts.
	broker     *plugin.GRPCBroker
	grpcServer *grpc.Server

	host      atomic.Pointer[Host]
	activated atomic.Bool
}

// unaryAfterActivation and streamAfterActivation read the flag OnActivate
// sets after the plugin's hook returned. Reading it orders every later call
// after that hook (Go's memory model), so the plugin's fields need no lock.
func (s *server) unaryAfterActivation(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.activated.Load()
	return handler(ctx, req)
}

func (s *server) streamAfterActivation(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	s.activated.Load()
	return handler(srv, ss)
}

func (s *server) close() {
	if h := s.host.Swap(nil); h != nil {
		h.close()
	}
}

// logError reports a plugin's failure: to the host's log once activated,
// to go-plugin's stderr logger before.
func (s *server) logError(msg string, args ...any) {
	if h := s.host.Load(); h != nil && h.conn != nil {
		h.Logger().Error(msg, args...)
		return
	}
	s.logger.Error(msg, args...)
}

// callHook runs a plugin hook. refusal is the hook's own error; a panic
// becomes failure, an Internal status, so one bad hook fails one call
// instead of killing the process.
func (s *server) callHook(name string, hook func() error) (refusal, failure error) {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("plugin hook panicked", "hook", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			failure = status.Errorf(codes.Internal, "%s panicked: %v", name, v)
		}
	}()
	return hook(), nil
}

// lifecycleServer serves plugvisor.v1.Lifecycle.
type lifecycleServer struct {
	plugvisorv1.UnimplementedLifecycleServer
	srv *server
}

func (l *lifecycleServer) Implemented(context.Context, *plugvisorv1.ImplementedRequest) (*plugvisorv1.ImplementedResponse, error) {
	var hooks []string
	if _, ok := l.srv.plugin.(Activator); ok {
		hooks = append(hooks, hookOnActivate)
	}
	if _, ok := l.srv.plugin.(Deactivator); ok {
		hooks = append(hooks, hookOnDeactivate)
	}
	if _, ok := l.srv.plugin.(ConfigurationChanger); ok {
		hooks = append(hooks, hookOnConfigurationChange)
	}
	if l.srv.handler != nil {
		hooks = append(hooks, hookServeHTTP)
	}
	// Every service on the server, go-plugin's plugin.GRPCBroker among them
	// (the host API needs it) and the plugin's own.
	info := l.srv.grpcServer.GetServiceInfo()
	services := make([]string, 0, len(info))
	for name := range info {
		services = append(services, name)
	}
	sort.Strings(services)
	return &plugvisorv1.ImplementedResponse{Hooks: hooks, Services: services}, nil
}

func (l *lifecycleServer) OnActivate(ctx context.Context, req *plugvisorv1.OnActivateRequest) (*plugvisorv1.OnActivateResponse, error) {
	// go-plugin's broker forgets the host's ConnInfo 5 s after it arrived
	// unless it is dialled, so dial now, before the plugin's own hook.
	var conn *grpc.ClientConn
	if id := req.GetHostApiBrokerId(); id != 0 {
		var err error
		conn, err = l.srv.broker.Dial(id)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "plugvisor SDK: cannot connect to the host API on broker id %d: %v", id, err)
		}
	}
	host := newHost(req, conn, l.srv)
	if a, ok := l.srv.plugin.(Activator); ok {
		err, panicked := l.srv.callHook(hookOnActivate, func() error { return a.OnActivate(ctx, host) })
		if err != nil || panicked != nil {
			host.close()
			if panicked != nil {
				return nil, panicked
			}
			return &plugvisorv1.OnActivateResponse{Refused: &plugvisorv1.Refusal{Message: err.Error()}}, nil
		}
	}
	if old := l.srv.host.Swap(host); old != nil {
		old.close()
	}
	l.srv.activated.Store(true)
	return &plugvisorv1.OnActivateResponse{}, nil
}

func (l *lifecycleServer) OnConfigurationChange(ctx context.Context, req *plugvisorv1.OnConfigurationChangeRequest) (*plugvisorv1.OnConfigurationChangeResponse, error) {
	config := Configuration{raw: []byte(req.GetConfigurationJson())}
	if c, ok := l.srv.plugin.(ConfigurationChanger); ok {
		err, panicked := l.srv.callHook(hookOnConfigurationChange, func() error { return c.OnConfigurationChange(ctx, config) })
		if panicked != nil {
			return nil, panicked
		}
		if err != nil {
			return &plugvisorv1.OnConfigurationChangeResponse{Refused: &plugvisorv1.Refusal{Message: err.Error()}}, nil
		}
	}
	if h := l.srv.host.Load(); h != nil {
		h.setConfiguration(config)
	}
	return &plugvisorv1.OnConfigurationChangeResponse{}, nil
}

func (l *lifecycleServer) OnDeactivate(ctx context.Context, _ *plugvisorv1.OnDeactivateRequest) (*plugvisorv1.OnDeactivateResponse, error) {
	if d, ok := l.srv.plugin.(Deactivator); ok {
		err, panicked := l.srv.callHook(hookOnDeactivate, func() error { return d.OnDeactivate(ctx) })
		if panicked != nil {
			return nil, panicked
		}
		if err != nil {
			// The host stops the plugin anyway; the operator reads why here.
			l.srv.logError("OnDeactivate failed", "error", err.Error())
		}
	}
	return &plugvisorv1.OnDeactivateResponse{}, nil
}
