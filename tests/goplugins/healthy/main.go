// Command healthy is the go-plugin (v1.7.0) gRPC test plugin: the hello-go
// example plus knobs that tests set through the environment.
//
//	PLUGVISOR_TEST_CRASH_AFTER_MS=N  exit with status 3 N ms after serving
//	                                 starts (the moment go-plugin builds the
//	                                 gRPC server, just before it prints the
//	                                 handshake line).
//	PLUGVISOR_TEST_MARKER=PATH       write "stopped" to PATH when the plugin
//	                                 stops cleanly, by either path below.
//	PLUGVISOR_TEST_TRIGGER=PATH      once serving, look for PATH every 10 ms;
//	                                 when it appears, remove it (so a restarted
//	                                 plugin does not see it) and do what it
//	                                 says: "allocate" (1 MiB at a time, touched
//	                                 and kept, until the runtime fails) or
//	                                 "spin" (burn CPU on every core).
//	PLUGVISOR_BENCH_HANDSHAKE_FILE=PATH  append "PID UNIX_NS" to PATH when
//	                                 serving starts, just before the handshake
//	                                 line is printed (bench/ uses it).
//
// How a go-plugin plugin learns it is being stopped (read from go-plugin
// v1.7.0, server.go and grpc_controller.go):
//
//   - GRPCController.Shutdown calls grpc.Server.Stop(); Serve's accept loop
//     ends, and plugin.Serve RETURNS to main (with no os.Exit). The code after
//     plugin.Serve is that hook; go-plugin offers no callback. go-plugin's own
//     host (Client.Kill) takes this path, then waits up to 2 s for the exit
//     before SIGKILL.
//   - SIGINT is swallowed by plugin.Serve (logged at trace level and ignored).
//   - SIGTERM is not handled by go-plugin at all, so without signal.Notify the
//     process dies at once (and leaves its unix socket file behind). This
//     plugin catches it and stops the gRPC server itself, which takes the
//     same path out of plugin.Serve (socket removed), then exits 0.
//     plugvisor sends SIGTERM after the controller call; go-plugin's host
//     never sends it.
//
// Both paths log a "healthy stopping" line whose "reason" says which one ran
// ("controller shutdown" or "signal terminated"), and the marker file says
// "stopped" either way.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "MATTERMOST_PLUGIN",
	MagicCookieValue: "Securely message teams, anywhere.",
}

// noServices is a gRPC plugin that registers nothing. With no GRPCPlugin in
// the Plugins map go-plugin announces "netrpc" (checked: a nil or empty map
// prints "1|1|unix|...|netrpc|").
type noServices struct {
	plugin.NetRPCUnsupportedPlugin
}

func (noServices) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (noServices) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, errors.New("the healthy test plugin offers no client-side interface")
}

func main() {
	// Created before plugin.Serve, so it keeps the real stderr after Serve
	// redirects os.Stderr into the GRPCStdio pipe.
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "healthy",
		Level:      hclog.Debug,
		Output:     os.Stderr,
		JSONFormat: true,
	})

	marker := os.Getenv("PLUGVISOR_TEST_MARKER")
	var markOnce sync.Once
	stopped := func(reason string, args ...interface{}) {
		logger.Info("healthy stopping", append([]interface{}{"reason", reason}, args...)...)
		if marker == "" {
			return
		}
		markOnce.Do(func() {
			if err := os.WriteFile(marker, []byte("stopped"), 0o644); err != nil {
				logger.Error("cannot write the stop marker", "path", marker, "error", err)
			}
		})
	}

	crashAfter := time.Duration(-1)
	if v := os.Getenv("PLUGVISOR_TEST_CRASH_AFTER_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			logger.Error("PLUGVISOR_TEST_CRASH_AFTER_MS must be a whole number of milliseconds", "value", v)
			os.Exit(2)
		}
		crashAfter = time.Duration(ms) * time.Millisecond
	}

	// Opened now so that only the write happens on the way to the handshake.
	var handshakeFile *os.File
	if path := os.Getenv("PLUGVISOR_BENCH_HANDSHAKE_FILE"); path != "" {
		handshakeFile, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	}

	var server atomic.Pointer[grpc.Server]
	var stopReason atomic.Value // string; set by the SIGTERM handler
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		srv := server.Load()
		if srv == nil {
			stopped("signal before serving", "signal", sig.String())
			os.Exit(0)
		}
		// Stop the gRPC server the way GRPCController.Shutdown does, so
		// plugin.Serve returns and closes (and removes) its unix socket.
		stopReason.Store("signal " + sig.String())
		srv.Stop()
		time.AfterFunc(2*time.Second, func() {
			stopped("signal, plugin.Serve did not return", "signal", sig.String())
			os.Exit(0)
		})
	}()

	grpcServer := func(opts []grpc.ServerOption) *grpc.Server {
		// go-plugin calls this in GRPCServer.Init, after the listener is
		// open and right before it prints the handshake line.
		srv := plugin.DefaultGRPCServer(opts)
		server.Store(srv)
		if handshakeFile != nil {
			fmt.Fprintf(handshakeFile, "%d %d\n", os.Getpid(), time.Now().UnixNano())
			handshakeFile.Close()
		}
		if path := os.Getenv("PLUGVISOR_TEST_TRIGGER"); path != "" {
			go misbehaveOn(path, logger)
		}
		if crashAfter >= 0 {
			logger.Info("will crash", "after_ms", crashAfter.Milliseconds())
			time.AfterFunc(crashAfter, func() {
				logger.Error("crashing on purpose", "exit_status", 3)
				os.Exit(3)
			})
		}
		return srv
	}

	logger.Info("healthy starting", "pid", os.Getpid())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"healthy": noServices{}},
		GRPCServer:      grpcServer,
		Logger:          logger,
	})
	if server.Load() == nil {
		// Serve logged why (for example the listener could not be opened).
		logger.Error("healthy never started serving")
		os.Exit(1)
	}
	if reason, ok := stopReason.Load().(string); ok {
		stopped(reason)
	} else {
		stopped("controller shutdown")
	}
}

// misbehaveOn waits for the trigger file, removes it and does what it says.
func misbehaveOn(path string, logger hclog.Logger) {
	for {
		text, err := os.ReadFile(path)
		if err == nil && os.Remove(path) == nil {
			switch what := strings.TrimSpace(string(text)); what {
			case "allocate":
				logger.Info("allocating until the memory runs out")
				var kept [][]byte
				for {
					chunk := make([]byte, 1<<20)
					for i := 0; i < len(chunk); i += 4096 {
						chunk[i] = 1
					}
					kept = append(kept, chunk)
				}
			case "spin":
				logger.Info("spinning on every core")
				for i := 0; i < runtime.NumCPU(); i++ {
					go func() {
						for n := 0; ; n++ {
							_ = n * n
						}
					}()
				}
				return
			default:
				logger.Error("unknown trigger", "text", what)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
