package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
)

// These tests build gohost and the plugins with the go command and run them
// as real processes, the way the benchmarks and the pytest suite use them.

var (
	repoRoot string // the module root (where go.mod is)
	binDir   string // freshly built gohost, healthy, hello-go, sdkplugin
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(repoRoot, "go.mod")); err != nil {
		panic("cannot find the module root from " + wd)
	}
	binDir, err = os.MkdirTemp("", "gohost-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(binDir)

	for name, pkg := range map[string]string{
		"gohost":    "./tools/gohost",
		"healthy":   "./tests/goplugins/healthy",
		"hello-go":  "./examples/plugins/hello-go/server",
		"sdkplugin": "./tests/goplugins/sdkplugin",
	} {
		cmd := exec.Command(goCommand(), "build", "-o", filepath.Join(binDir, name), pkg)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			panic("go build " + pkg + ": " + err.Error())
		}
	}
	return m.Run()
}

func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// runOnce runs "gohost once ARGS..." and decodes its one JSON object.
func runOnce(t *testing.T, dir string, args ...string) (onceResult, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gohost"), append([]string{"once"}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gohost once: %v\nstderr:\n%s", err, stderr.String())
	}
	var res onceResult
	dec := json.NewDecoder(&stdout)
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("gohost once printed no JSON object (%v)\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if dec.More() {
		t.Fatalf("gohost once printed more than one JSON value:\n%s", stdout.String())
	}
	return res, code
}

func logText(res onceResult) string {
	return "host log:\n  " + strings.Join(res.Log, "\n  ")
}

// assertHealthyRun checks one clean start, ping and graceful stop.
func assertHealthyRun(t *testing.T, res onceResult, code int) {
	t.Helper()
	if code != 0 || !res.PingOK {
		t.Fatalf("want ping_ok and exit 0, got exit %d, start_error %q, ping_error %q\n%s",
			code, res.StartError, res.PingError, logText(res))
	}
	if res.HealthStatus != "SERVING" {
		t.Errorf("health status of service \"plugin\" = %q, want SERVING", res.HealthStatus)
	}
	if res.Protocol != "grpc" {
		t.Errorf("protocol = %q, want grpc", res.Protocol)
	}
	if !res.Graceful {
		t.Errorf("Kill was not graceful (go-plugin logged %q)\n%s", gracefulFailureMessage, logText(res))
	}
	if !res.Exited || res.ExitCode != 0 {
		t.Errorf("want the plugin exited with status 0, got exited=%v exit_status=%q", res.Exited, res.ExitStatus)
	}
	if res.StartMs <= 0 || res.KillMs <= 0 {
		t.Errorf("timings not filled in: start_ms=%v kill_ms=%v", res.StartMs, res.KillMs)
	}
}

func TestOnceGoTestPluginPingsAndStopsGracefully(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "marker")
	res, code := runOnce(t, repoRoot, "--env", "PLUGVISOR_TEST_MARKER="+marker, "--", filepath.Join(binDir, "healthy"))
	assertHealthyRun(t, res, code)
	if res.Network != "unix" {
		t.Errorf("network = %q, want unix (go-plugin's default off Windows)", res.Network)
	}
	got, err := os.ReadFile(marker)
	if err != nil || string(got) != "stopped" {
		t.Errorf("stop marker = %q (%v), want \"stopped\": the plugin's code after plugin.Serve did not run", got, err)
	}
	if !strings.Contains(strings.Join(res.Log, "\n"), "controller shutdown") {
		t.Errorf("the plugin did not log its controller-shutdown path\n%s", logText(res))
	}
}

func TestOnceHelloGoExample(t *testing.T) {
	res, code := runOnce(t, repoRoot, "--", filepath.Join(binDir, "hello-go"))
	assertHealthyRun(t, res, code)
}

func TestOnceReportsAPluginThatExitsBeforeItsHandshake(t *testing.T) {
	res, code := runOnce(t, repoRoot, "--", "/bin/sh", "-c", "echo oops >&2; exit 7")
	if code != 1 || res.PingOK {
		t.Fatalf("want exit 1 and ping_ok false, got exit %d ping_ok %v", code, res.PingOK)
	}
	if res.StartError == "" || !strings.HasPrefix(res.PingError, "not pinged") {
		t.Errorf("want a start error and ping_error \"not pinged...\", got %q / %q", res.StartError, res.PingError)
	}
	if res.ExitCode != 7 {
		t.Errorf("exit_code = %d (%q), want 7", res.ExitCode, res.ExitStatus)
	}
}

func TestOnceTCPFlagRejectsAUnixPlugin(t *testing.T) {
	// A go-plugin Go plugin always listens on a unix socket off Windows, so
	// --tcp must say so rather than report a tcp run.
	res, code := runOnce(t, repoRoot, "--tcp", "--", filepath.Join(binDir, "healthy"))
	if code != 1 || !strings.Contains(res.StartError, "announced \"unix\"") {
		t.Fatalf("want exit 1 and a --tcp error, got exit %d start_error %q", code, res.StartError)
	}
}

// The Python SDK's example plugin under go-plugin's own host. It needs the
// test venv (.venv, made by scripts/setup) and the example's venv (made by
// scripts/setup-python).
func TestOnceHelloPythonExample(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repoRoot, ".venv", "bin", "python")); err != nil {
		t.Skip("no Python test venv at .venv/bin/python: run scripts/setup first")
	}
	bundle := filepath.Join(repoRoot, "examples", "plugins", "hello-python")
	python := filepath.Join(bundle, "venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: run scripts/setup-python to create the hello-python plugin's venv (%v)", python, err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "plugin.py")); err != nil {
		t.Fatalf("the hello-python example has no plugin.py: %v", err)
	}
	// Like plugvisor and the design's Python runtime: the bundle is the
	// working directory and the script path is relative to it.
	res, code := runOnce(t, bundle, "--dir", bundle, "--", python, "plugin.py")
	assertHealthyRun(t, res, code)
}

// runSub runs "gohost SUBCOMMAND ARGS..." and decodes its JSON into out.
func runSub(t *testing.T, out interface{}, sub string, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gohost"), append([]string{sub}, args...)...)
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gohost %s: %v\nstderr:\n%s", sub, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("gohost %s printed no JSON object (%v)\nstdout:\n%s\nstderr:\n%s", sub, err, stdout.String(), stderr.String())
	}
	return code
}

func TestBenchSubcommandsRunTheGoTestPlugin(t *testing.T) {
	healthy := filepath.Join(binDir, "healthy")
	for _, sub := range []string{"start", "stop", "scale"} {
		var res struct {
			Runs       []json.RawMessage `json:"runs"`
			StartMs    stats             `json:"start_ms"`
			KillMs     stats             `json:"kill_ms"`
			Failures   int               `json:"failures"`
			Ungraceful int               `json:"ungraceful"`
		}
		if code := runSub(t, &res, sub, "--count", "3", "--", healthy); code != 0 || res.Failures != 0 {
			t.Errorf("gohost %s: exit %d, %d failures", sub, code, res.Failures)
		}
		if len(res.Runs) != 3 || res.StartMs.N != 3 || res.KillMs.N != 3 || res.Ungraceful != 0 {
			t.Errorf("gohost %s: want 3 graceful runs, got %d runs, start n=%d kill n=%d, %d ungraceful",
				sub, len(res.Runs), res.StartMs.N, res.KillMs.N, res.Ungraceful)
		}
	}

	var ping struct {
		PingMs   stats `json:"ping_ms"`
		Failures int   `json:"failures"`
	}
	if code := runSub(t, &ping, "ping", "--count", "50", "--", healthy); code != 0 || ping.PingMs.N != 50 {
		t.Errorf("gohost ping: exit %d, %d pings timed, %d failures", code, ping.PingMs.N, ping.Failures)
	}
}

func TestCrashSubcommandSeesTheGoTestPluginExit(t *testing.T) {
	var res struct {
		Runs []struct {
			StartMs    float64 `json:"start_ms"`
			ExitedMs   float64 `json:"exited_ms"`
			PingFailMs float64 `json:"ping_fail_ms"`
			ExitStatus string  `json:"exit_status"`
		} `json:"runs"`
		Failures int `json:"failures"`
	}
	// go-plugin's host leaves the socket of a crashed plugin behind; keep it
	// out of /tmp.
	code := runSub(t, &res, "crash", "--crash-after-ms", "300", "--env", "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t),
		"--", filepath.Join(binDir, "healthy"))
	if code != 0 || res.Failures != 0 || len(res.Runs) != 1 {
		t.Fatalf("gohost crash: exit %d, %d failures, %d runs", code, res.Failures, len(res.Runs))
	}
	r := res.Runs[0]
	if r.ExitStatus != "exit status 3" {
		t.Errorf("exit_status = %q, want \"exit status 3\"", r.ExitStatus)
	}
	// The crash timer starts when go-plugin builds the gRPC server, after
	// Client() was called; exited_ms and ping_fail_ms count from Client()
	// returning. So start_ms plus either is at least the 300 ms.
	if r.ExitedMs < 0 || r.PingFailMs < 0 || r.StartMs+r.ExitedMs < 290 || r.StartMs+r.PingFailMs < 290 {
		t.Errorf("the crash was not seen, or seen too early: start_ms=%v exited_ms=%v ping_fail_ms=%v (the plugin crashes 300 ms in)",
			r.StartMs, r.ExitedMs, r.PingFailMs)
	}
}

// The Go test plugin on its own, as plugvisor drives it: SIGTERM takes the
// same way out of plugin.Serve as the controller, so the socket goes away.
func TestHealthyPluginStopsCleanlyOnSIGTERM(t *testing.T) {
	sockDir := plugvisortest.SocketDir(t)
	marker := filepath.Join(t.TempDir(), "marker")
	cmd := exec.Command(filepath.Join(binDir, "healthy"))
	cmd.Env = append(os.Environ(),
		Handshake.MagicCookieKey+"="+Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=1",
		"PLUGIN_UNIX_SOCKET_DIR="+sockDir,
		"PLUGVISOR_TEST_MARKER="+marker,
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("no handshake line: %v\nstderr:\n%s", err, stderr.String())
	}
	parts := strings.Split(strings.TrimSpace(line), "|")
	if len(parts) != 6 || parts[0] != "1" || parts[1] != "1" || parts[2] != "unix" || parts[4] != "grpc" || parts[5] != "" {
		t.Errorf("handshake line = %q, want 1|1|unix|ADDR|grpc| (empty cert field)", line)
	}
	if len(parts) > 3 && filepath.Dir(parts[3]) != sockDir {
		t.Errorf("socket %q is not in PLUGIN_UNIX_SOCKET_DIR %q", parts[3], sockDir)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("still running 10 s after SIGTERM\nstderr:\n%s", stderr.String())
	}
	if got, err := os.ReadFile(marker); err != nil || string(got) != "stopped" {
		t.Errorf("stop marker = %q (%v), want \"stopped\"", got, err)
	}
	if left, _ := os.ReadDir(sockDir); len(left) != 0 {
		t.Errorf("the unix socket was left behind: %v", left)
	}
	if !strings.Contains(stderr.String(), `"reason":"signal terminated"`) {
		t.Errorf("no \"healthy stopping\" line with reason \"signal terminated\" on stderr:\n%s", stderr.String())
	}
}

// --automtls: go-plugin's AutoMTLS, with the host's P-521 client certificate
// in PLUGIN_CLIENT_CERT and the plugin's certificate pinned from handshake
// field 6. A plugin that answered in plaintext, or refused the host's
// certificate, would fail the ping.
func TestOnceAutoMTLSGoTestPlugin(t *testing.T) {
	res, code := runOnce(t, repoRoot, "--automtls", "--", filepath.Join(binDir, "healthy"))
	assertHealthyRun(t, res, code)
	assertAutoMTLSLogged(t, res)
}

func TestOnceAutoMTLSHelloPythonExample(t *testing.T) {
	bundle, python := helloPython(t)
	res, code := runOnce(t, bundle, "--automtls", "--dir", bundle, "--", python, "plugin.py")
	assertHealthyRun(t, res, code)
	assertAutoMTLSLogged(t, res)
}

func assertAutoMTLSLogged(t *testing.T, res onceResult) {
	t.Helper()
	if !strings.Contains(strings.Join(res.Log, "\n"), "configuring client automatic mTLS") {
		t.Errorf("go-plugin did not log that it configured AutoMTLS\n%s", logText(res))
	}
}

// helloPython returns the hello-python bundle and its venv's python, or
// skips/fails the way TestOnceHelloPythonExample does.
func helloPython(t *testing.T) (string, string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, ".venv", "bin", "python")); err != nil {
		t.Skip("no Python test venv at .venv/bin/python: run scripts/setup first")
	}
	bundle := filepath.Join(repoRoot, "examples", "plugins", "hello-python")
	python := filepath.Join(bundle, "venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: run scripts/setup-python to create the hello-python plugin's venv (%v)", python, err)
	}
	return bundle, python
}

// selfSigned makes a certificate shaped like go-plugin's AutoMTLS ones
// (P-521, "localhost", a CA usable for client and server auth).
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// The SDK under AutoMTLS refuses Go TLS clients that do not present the
// certificate from PLUGIN_CLIENT_CERT, and serves the one that does.
func TestHelloPythonAutoMTLSRefusesOtherClients(t *testing.T) {
	bundle, python := helloPython(t)
	hostCert := selfSigned(t)
	hostPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hostCert.Certificate[0]})

	cmd := exec.Command(python, "plugin.py")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(),
		Handshake.MagicCookieKey+"="+Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=1",
		"PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t),
		"PLUGIN_CLIENT_CERT="+string(hostPEM),
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no handshake line: %v\nstderr:\n%s", err, stderr.String())
	}
	parts := strings.Split(strings.TrimSpace(line), "|")
	if len(parts) != 6 || parts[2] != "unix" || parts[4] != "grpc" {
		t.Fatalf("handshake line = %q, want 1|1|unix|ADDR|grpc|CERT", line)
	}
	der, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		t.Fatalf("field 6 is not unpadded base64 (go-plugin decodes it with RawStdEncoding): %v", err)
	}
	serverCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("field 6 is not a DER certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(serverCert)

	check := func(creds credentials.TransportCredentials) (string, error) {
		conn, err := grpc.Dial("unix:"+parts[3], grpc.WithTransportCredentials(creds))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "plugin"})
		if err != nil {
			return "", err
		}
		return resp.GetStatus().String(), nil
	}
	tlsWith := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{
			Certificates: certs, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12,
		})
	}

	if status, err := check(tlsWith(hostCert)); err != nil || status != "SERVING" {
		t.Fatalf("the host's own certificate: status %q, error %v, want SERVING\nstderr:\n%s", status, err, stderr.String())
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"TLS without a client certificate":                tlsWith(),
		"a client certificate the host did not hand over": tlsWith(selfSigned(t)),
		"plaintext": insecure.NewCredentials(),
	} {
		if status, err := check(creds); err == nil {
			t.Errorf("%s: got %q, want the connection refused", name, status)
		}
	}
	if status, err := check(tlsWith(hostCert)); err != nil || status != "SERVING" {
		t.Errorf("after the refusals: status %q, error %v, want SERVING", status, err)
	}
}

// The plugvisor.v1 scenarios against the Go SDK's test plugin: the timed
// calls really crossed (the in-memory host counted them), with AutoMTLS
// off and on.
func TestHostAPIAndHooksScenariosRunTheSDKPlugin(t *testing.T) {
	sdk := filepath.Join(binDir, "sdkplugin")
	for _, tlsFlag := range []string{"--automtls=false", "--automtls"} {
		var api struct {
			Count    int    `json:"count"`
			AutoMTLS bool   `json:"automtls"`
			GetMs    stats  `json:"get_ms"`
			SetMs    stats  `json:"set_ms"`
			HostGets int    `json:"host_gets"`
			HostSets int    `json:"host_sets"`
			Error    string `json:"error"`
		}
		code := runSub(t, &api, "hostapi", tlsFlag, "--count", "50", "--env", "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t), "--", sdk)
		if code != 0 || api.Error != "" {
			t.Fatalf("gohost hostapi %s: exit %d, error %q", tlsFlag, code, api.Error)
		}
		if api.GetMs.N != 50 || api.SetMs.N != 50 || api.HostGets < 50 || api.HostSets < 50 {
			t.Errorf("gohost hostapi %s: %d gets and %d sets timed, the host served %d and %d; want 50 each",
				tlsFlag, api.GetMs.N, api.SetMs.N, api.HostGets, api.HostSets)
		}
		if api.AutoMTLS != (tlsFlag == "--automtls") || api.GetMs.P50 <= 0 || api.GetMs.P99 < api.GetMs.P50 {
			t.Errorf("gohost hostapi %s: automtls %v, get p50 %v p99 %v", tlsFlag, api.AutoMTLS, api.GetMs.P50, api.GetMs.P99)
		}

		var hooks struct {
			Hook     string `json:"hook"`
			HookMs   stats  `json:"hook_ms"`
			HealthMs stats  `json:"health_ms"`
			Error    string `json:"error"`
		}
		code = runSub(t, &hooks, "hooks", tlsFlag, "--count", "50", "--env", "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t), "--", sdk)
		if code != 0 || hooks.Error != "" || hooks.HookMs.N != 50 || hooks.HealthMs.N != 50 || hooks.Hook != "OnConfigurationChange" {
			t.Errorf("gohost hooks %s: exit %d, error %q, %d hooks and %d checks timed", tlsFlag, code, hooks.Error, hooks.HookMs.N, hooks.HealthMs.N)
		}
	}
}

func TestHooksScenarioNamesAPluginWithoutPlugvisorV1(t *testing.T) {
	var res struct {
		Error string `json:"error"`
	}
	code := runSub(t, &res, "hooks", "--count", "5", "--", filepath.Join(binDir, "healthy"))
	if code != 1 || !strings.Contains(res.Error, "Implemented") {
		t.Errorf("exit %d, error %q; want exit 1 and an error about Implemented", code, res.Error)
	}
}
