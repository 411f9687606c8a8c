// Command gohost runs a plugin under HashiCorp go-plugin's own host
// (v1.7.0), configured the way Mattermost's plugin supervisor configures it,
// and prints what happened as one JSON object on stdout.
//
// It is the reference plugvisor is measured and tested against: the
// "go-plugin Go host" of the design notes.
//
//	gohost once [flags] -- CMD [ARGS...]
//
// starts the plugin, waits for Client(), calls Ping through the
// ClientProtocol, calls Kill() and prints
//
//	{"start_ms":..,"ping_ok":true,"ping_error":"","kill_ms":..,
//	 "graceful":true,"exited":true,"log":[...], ...}
//
// Run "gohost help" for the flags and the other subcommands.
//
// The client configuration follows mattermost/server/public/plugin/
// supervisor.go (newSupervisor): the Mattermost handshake, StartTimeout 3 s,
// SyncStdout/SyncStderr into the host logger, a Plugins map so that
// PLUGIN_PROTOCOL_VERSIONS is sent, and (as Mattermost's plan for Python
// plugins does) AllowedProtocols gRPC only. Hooks are dispensed only by the
// plugvisor.v1 scenarios (hostapi, hooks), for the host's side of the broker.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Handshake is Mattermost's go-plugin handshake.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "MATTERMOST_PLUGIN",
	MagicCookieValue: "Securely message teams, anywhere.",
}

// MattermostStartTimeout is ClientConfig.StartTimeout in Mattermost's
// newSupervisor.
const MattermostStartTimeout = 3 * time.Second

// gracefulFailureMessage is what Client.Kill logs (at warn level) when the
// plugin did not exit within 2 s of the controller Shutdown, just before it
// SIGKILLs the process.
const gracefulFailureMessage = "plugin failed to exit gracefully"

// TCPEnv is put in the plugin's environment by --tcp. go-plugin has no such
// switch (a go-plugin Go plugin always listens on a unix socket off Windows);
// it is the plugvisor Python SDK's way to be asked for tcp.
const TCPEnv = "PLUGVISOR_TRANSPORT=tcp"

// stubPlugin stands in for Mattermost's "hooks" entry. Its job is to make
// the Plugins map non-empty, so go-plugin sends PLUGIN_PROTOCOL_VERSIONS=1
// and accepts app version 1; the plugvisor.v1 scenarios dispense it to get
// the host's side of the broker.
type stubPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (stubPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("gohost is a host; it serves no plugin")
}

func (stubPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return &hostSession{broker: broker, conn: conn}, nil
}

// hostLog collects the host logger's output, line by line, and can mirror
// it to another writer (stderr with --verbose).
type hostLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	mirror io.Writer
}

func (h *hostLog) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mirror != nil {
		_, _ = h.mirror.Write(p)
	}
	return h.buf.Write(p)
}

// Lines returns every complete or partial line logged so far.
func (h *hostLog) Lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	text := strings.TrimRight(h.buf.String(), "\n")
	if text == "" {
		return []string{}
	}
	return strings.Split(text, "\n")
}

func (h *hostLog) Contains(s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return bytes.Contains(h.buf.Bytes(), []byte(s))
}

// envFlag is a repeatable KEY=VALUE flag.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if !strings.Contains(v, "=") || strings.HasPrefix(v, "=") {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

// hostFlags are the flags every subcommand shares.
type hostFlags struct {
	tcp          bool
	autoMTLS     bool
	startTimeout time.Duration
	logLevel     string
	verbose      bool
	dir          string
	env          envFlag
}

func (f *hostFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.tcp, "tcp", false, "ask the plugin for tcp (puts "+TCPEnv+" in its environment) and fail if it announces another network")
	fs.BoolVar(&f.autoMTLS, "automtls", false, "ClientConfig.AutoMTLS: give the plugin a client certificate in PLUGIN_CLIENT_CERT and talk TLS pinned to the certificate in its handshake")
	fs.DurationVar(&f.startTimeout, "start-timeout", MattermostStartTimeout, "ClientConfig.StartTimeout (Mattermost uses 3s)")
	fs.StringVar(&f.logLevel, "log-level", "debug", "host logger level: trace, debug, info, warn, error")
	fs.BoolVar(&f.verbose, "verbose", false, "also copy the host log to stderr as it happens")
	fs.StringVar(&f.dir, "dir", "", "working directory of the plugin process (default: gohost's)")
	fs.Var(&f.env, "env", "KEY=VALUE for the plugin's environment (repeatable)")
}

// newLog makes the captured host log and the hclog logger writing into it.
func (f *hostFlags) newLog(stderr io.Writer) (*hostLog, hclog.Logger, error) {
	level := hclog.LevelFromString(f.logLevel)
	if level == hclog.NoLevel {
		return nil, nil, fmt.Errorf("unknown --log-level %q", f.logLevel)
	}
	hl := &hostLog{}
	if f.verbose {
		hl.mirror = stderr
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "plugin",
		Level:  level,
		Output: hl,
	})
	return hl, logger, nil
}

// newClient builds a go-plugin client for argv, configured like Mattermost's
// supervisor, and the command it will run. It does not start the plugin.
func (f *hostFlags) newClient(argv []string, logger hclog.Logger) (*plugin.Client, *exec.Cmd) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = f.dir
	// go-plugin appends the host environment after cmd.Env unless
	// SkipHostEnv is set, and the last duplicate wins, so build it here to
	// let --env override the host's.
	cmd.Env = append(cmd.Env, os.Environ()...)
	if f.tcp {
		cmd.Env = append(cmd.Env, TCPEnv)
	}
	cmd.Env = append(cmd.Env, f.env...)

	stdio := &hclog.StandardLoggerOptions{ForceLevel: hclog.Info}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugin.PluginSet{"hooks": stubPlugin{}},
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         f.autoMTLS,
		StartTimeout:     f.startTimeout,
		SyncStdout:       logger.Named("plugin_stdout").StandardWriter(stdio),
		SyncStderr:       logger.Named("plugin_stderr").StandardWriter(stdio),
		Logger:           logger,
	})
	return client, cmd
}

// exitOf describes how the plugin process ended. Call it only after
// Client.Kill has returned: Kill waits for go-plugin's goroutine that runs
// cmd.Wait, so ProcessState is set by then if the process was started.
func exitOf(cmd *exec.Cmd) (string, int) {
	ps := cmd.ProcessState
	if ps == nil {
		return "", -1
	}
	return ps.String(), ps.ExitCode()
}

// checkNetwork enforces --tcp once the handshake has been read.
func (f *hostFlags) checkNetwork(c *plugin.Client) error {
	rc := c.ReattachConfig()
	if !f.tcp || rc == nil || rc.Addr == nil {
		return nil
	}
	if n := rc.Addr.Network(); n != "tcp" {
		return fmt.Errorf("--tcp: asked the plugin for tcp (%s) but it announced %q", TCPEnv, n)
	}
	return nil
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// healthStatus asks grpc.health.v1 for service "plugin" itself, because
// go-plugin's Ping() ignores the status it gets back.
func healthStatus(cp plugin.ClientProtocol) string {
	gc, ok := cp.(*plugin.GRPCClient)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := grpc_health_v1.NewHealthClient(gc.Conn).Check(ctx,
		&grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
	if err != nil {
		return "error: " + err.Error()
	}
	return resp.GetStatus().String()
}

// onceResult is what "gohost once" prints.
type onceResult struct {
	StartMs      float64  `json:"start_ms"`
	PingOK       bool     `json:"ping_ok"`
	PingError    string   `json:"ping_error"`
	PingMs       float64  `json:"ping_ms"`
	HealthStatus string   `json:"health_status"`
	KillMs       float64  `json:"kill_ms"`
	Graceful     bool     `json:"graceful"`
	Exited       bool     `json:"exited"`
	ExitStatus   string   `json:"exit_status"`
	ExitCode     int      `json:"exit_code"`
	StartError   string   `json:"start_error"`
	Pid          string   `json:"pid"`
	Network      string   `json:"network"`
	Address      string   `json:"address"`
	Protocol     string   `json:"protocol"`
	Log          []string `json:"log"`
}

func cmdOnce(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("once", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var hf hostFlags
	hf.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gohost once [flags] -- CMD [ARGS...]")
		fmt.Fprintln(stderr, "Start the plugin, Ping it once, Kill it; print one JSON object.")
		fs.PrintDefaults()
	}
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	hl, logger, err := hf.newLog(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gohost:", err)
		return 2
	}

	res := onceResult{Log: []string{}}
	client, cmd := hf.newClient(argv, logger)

	t0 := time.Now()
	cp, err := client.Client()
	res.StartMs = ms(time.Since(t0))
	if err == nil {
		err = hf.checkNetwork(client)
	}
	if err != nil {
		res.StartError = err.Error()
		res.PingError = "not pinged: the plugin did not start: " + err.Error()
	} else {
		res.Pid = client.ID()
		if rc := client.ReattachConfig(); rc != nil && rc.Addr != nil {
			res.Network = rc.Addr.Network()
			res.Address = rc.Addr.String()
			res.Protocol = string(rc.Protocol)
		}
		t1 := time.Now()
		perr := cp.Ping()
		res.PingMs = ms(time.Since(t1))
		if perr != nil {
			res.PingError = perr.Error()
		} else {
			res.PingOK = true
		}
		res.HealthStatus = healthStatus(cp)
	}

	t2 := time.Now()
	client.Kill()
	res.KillMs = ms(time.Since(t2))
	res.Exited = client.Exited()
	res.ExitStatus, res.ExitCode = exitOf(cmd)
	res.Graceful = res.StartError == "" && !hl.Contains(gracefulFailureMessage)
	res.Log = hl.Lines()

	if err := writeJSON(stdout, res); err != nil {
		fmt.Fprintln(stderr, "gohost:", err)
		return 1
	}
	if !res.PingOK {
		return 1
	}
	return 0
}

// parse parses flags and returns the plugin command after them (after "--"
// when given). A nil argv means "stop, exit with code".
func parse(fs *flag.FlagSet, args []string) ([]string, int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		return nil, 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(fs.Output(), "gohost: no plugin command given (put it after --)")
		fs.Usage()
		return nil, 2
	}
	return argv, 0
}

// parse is the package's parse plus the checks every bench subcommand makes:
// the plugin command, or nil and the exit code.
func (bf *benchFlags) parse(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, int) {
	argv, code := parse(fs, args)
	if argv == nil {
		return nil, code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return nil, 2
	}
	return argv, 0
}

func writeJSON(w io.Writer, v interface{}) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

type subcommand struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var subcommands = map[string]subcommand{
	"once": {"start, Ping once, Kill; print timings and the host log as JSON", cmdOnce},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gohost SUBCOMMAND [flags] -- CMD [ARGS...]")
	fmt.Fprintln(w, "Runs a plugin under hashicorp/go-plugin v1.7.0's host, configured like Mattermost's supervisor.")
	fmt.Fprintln(w, "\nsubcommands:")
	names := make([]string, 0, len(subcommands))
	for name := range subcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-8s %s\n", name, subcommands[name].summary)
	}
	fmt.Fprintln(w, "\nRun \"gohost SUBCOMMAND -h\" for its flags.")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "gohost: unknown subcommand %q\n", args[0])
		usage(stderr)
		return 2
	}
	return sc.run(args[1:], stdout, stderr)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
