// Command hello-go is the smallest honest go-plugin (v1.7.0) gRPC plugin that
// a Mattermost-style host, or plugvisor, can supervise.
//
// It has no hooks of its own. What it serves comes from go-plugin itself:
//
//   - grpc.health.v1.Health, with service "plugin" SERVING (what Ping checks)
//   - plugin.GRPCController (Shutdown, which the host calls to stop it)
//   - plugin.GRPCStdio (the plugin's stdout/stderr as a gRPC stream)
//   - plugin.GRPCBroker and server reflection
//
// Logs are hclog JSON lines on stderr, so a host can read their levels.
//
// Build it for the manifest's current platform with scripts/setup-go, or:
//
//	go build -o examples/plugins/hello-go/server/dist/plugin-$(go env GOOS)-$(go env GOARCH) ./examples/plugins/hello-go/server
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// handshake is Mattermost's go-plugin handshake; plugvisor uses it by default.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "MATTERMOST_PLUGIN",
	MagicCookieValue: "Securely message teams, anywhere.",
}

// noServices is a gRPC plugin that registers nothing.
//
// go-plugin needs it: Serve picks the protocol from the type of the first
// entry in the Plugins map, and an empty (or nil) map makes it announce
// "netrpc" even when GRPCServer is set. One GRPCPlugin entry is what makes
// the handshake line say "grpc".
type noServices struct {
	plugin.NetRPCUnsupportedPlugin
}

func (noServices) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (noServices) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, _ *grpc.ClientConn) (interface{}, error) {
	return nil, errors.New("hello-go offers no client-side interface")
}

func main() {
	// The logger keeps the real stderr: plugin.Serve later swaps os.Stderr
	// for the pipe behind GRPCStdio.
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "hello-go",
		Level:      hclog.Info,
		Output:     os.Stderr,
		JSONFormat: true,
	})

	// go-plugin ignores SIGINT while serving and leaves SIGTERM at Go's
	// default (die at once). A host that sends SIGTERM gets a log line and
	// exit status 0 instead. (The unix socket stays behind on this path;
	// plugvisor removes the private PLUGIN_UNIX_SOCKET_DIR it gave the plugin.
	// tests/goplugins/healthy shows how to leave through plugin.Serve instead.)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		logger.Info("hello-go stopping", "reason", "signal", "signal", sig.String())
		os.Exit(0)
	}()

	logger.Info("hello-go starting", "pid", os.Getpid())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"hello": noServices{}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          logger,
	})
	// Serve returns when the gRPC server has stopped, which is what
	// GRPCController.Shutdown does (go-plugin's Kill calls it first). It also
	// returns, having logged why, if it could not open its listener.
	logger.Info("hello-go stopping", "reason", "serve returned")
}
