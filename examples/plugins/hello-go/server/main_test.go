package main

// The example under go-plugin's own host playing plugvisor's part
// (sdk/go/plugvisortest): built, started as a real process, activated with
// the defaults of its plugin.json, and driven over HTTP and its hooks.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hello-go-test-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "hello-go")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(goCmd, "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// defaults builds the configuration plugvisor would send from plugin.json's
// settings_schema defaults.
func defaults(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "plugin.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		ID             string `json:"id"`
		SettingsSchema struct {
			Settings []struct {
				Key     string `json:"key"`
				Type    string `json:"type"`
				Default any    `json:"default"`
			} `json:"settings"`
		} `json:"settings_schema"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.ID != "hello-go" {
		t.Fatalf("plugin.json id = %q", manifest.ID)
	}
	config := map[string]any{}
	for _, s := range manifest.SettingsSchema.Settings {
		config[s.Key] = s.Default
	}
	return config
}

func configJSON(t *testing.T, c map[string]any) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func start(t *testing.T, host *plugvisortest.Host, autoMTLS bool) *plugvisortest.Plugin {
	t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t))
	p, err := plugvisortest.Start(plugvisortest.Config{Cmd: cmd, Host: host, AutoMTLS: autoMTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func get(t *testing.T, p *plugvisortest.Plugin, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost"+path, nil)
	resp, err := (&http.Client{Transport: p}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func mustContain(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

func TestHelloGoCountsActivationsAndFollowsItsSettings(t *testing.T) {
	for _, autoMTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "automtls"}[autoMTLS], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			host := plugvisortest.NewHost()
			config := defaults(t)

			p := start(t, host, autoMTLS)
			resp, err := p.Activate(ctx, "hello-go", configJSON(t, config))
			if err != nil || resp.GetRefused() != nil {
				t.Fatalf("activation: %v %v", resp, err)
			}
			if v, _ := host.Value("activations"); string(v) != "1" {
				t.Errorf("the host's store says activations = %q, want 1", v)
			}
			code, page := get(t, p, "/")
			if code != 200 {
				t.Fatalf("GET / = %d", code)
			}
			mustContain(t, "the page", page, "<h1>Hello from Go, world!</h1>", "activated 1 time.", `href="/plugins/hello-go/status.json"`)

			var st struct {
				PluginID    string `json:"plugin_id"`
				Activations int    `json:"activations"`
				Settings    struct {
					Greeting        string `json:"greeting"`
					ShowActivations bool   `json:"show_activations"`
				} `json:"settings"`
			}
			code, body := get(t, p, "/status.json")
			if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
				t.Fatalf("GET /status.json = %d %q (%v)", code, body, err)
			}
			if st.PluginID != "hello-go" || st.Activations != 1 || st.Settings.Greeting != "Hello from Go" || !st.Settings.ShowActivations {
				t.Errorf("status %+v", st)
			}
			if _, err := host.WaitLog(ctx, func(r plugvisortest.LogRecord) bool {
				return r.Message == "hello-go activated" && r.Fields["activations"] == "1"
			}); err != nil {
				t.Error(err)
			}
			if code, _ := get(t, p, "/nope"); code != 404 {
				t.Errorf("GET /nope = %d, want 404", code)
			}

			config["greeting"] = "Bonjour"
			config["show_activations"] = false
			if resp, err := p.ChangeConfiguration(ctx, configJSON(t, config)); err != nil || resp.GetRefused() != nil {
				t.Fatalf("change: %v %v", resp, err)
			}
			_, page = get(t, p, "/")
			mustContain(t, "the page after the change", page, "<h1>Bonjour, world!</h1>")
			if strings.Contains(page, "activated") {
				t.Errorf("show_activations is off but the page shows the count:\n%s", page)
			}

			config["greeting"] = ""
			resp2, err := p.ChangeConfiguration(ctx, configJSON(t, config))
			if err != nil {
				t.Fatal(err)
			}
			mustContain(t, "the refusal", resp2.GetRefused().GetMessage(), "greeting setting is empty")
			_, page = get(t, p, "/")
			mustContain(t, "the page after a refused change", page, "<h1>Bonjour, world!</h1>")

			if err := p.Deactivate(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := host.WaitLog(ctx, func(r plugvisortest.LogRecord) bool { return r.Message == "hello-go deactivating" }); err != nil {
				t.Error(err)
			}
			p.Kill()

			// The count lives in the host's store, so the next process sees it.
			p = start(t, host, autoMTLS)
			config = defaults(t)
			if resp, err := p.Activate(ctx, "hello-go", configJSON(t, config)); err != nil || resp.GetRefused() != nil {
				t.Fatalf("second activation: %v %v", resp, err)
			}
			_, page = get(t, p, "/")
			mustContain(t, "the second process's page", page, "activated 2 times.")

			p = start(t, host, autoMTLS)
			config["greeting"] = strings.Repeat("x", 201)
			resp, err = p.Activate(ctx, "hello-go", configJSON(t, config))
			if err != nil {
				t.Fatal(err)
			}
			mustContain(t, "the refusal", resp.GetRefused().GetMessage(), "201 characters long; the limit is 200")
		})
	}
}

// plugvisor sends SIGTERM after the controller's Shutdown: hello-go leaves
// through Serve (socket removed), logs why and exits 0.
func TestHelloGoStopsCleanlyOnSIGTERM(t *testing.T) {
	sockDir := plugvisortest.SocketDir(t)
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(),
		"MATTERMOST_PLUGIN=Securely message teams, anywhere.",
		"PLUGIN_PROTOCOL_VERSIONS=1",
		"PLUGIN_UNIX_SOCKET_DIR="+sockDir,
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "|unix|") {
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("handshake line %q (%v)", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit status 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("still running 10 s after SIGTERM")
	}
	if left, _ := os.ReadDir(sockDir); len(left) != 0 {
		t.Errorf("the socket was left behind: %v", left)
	}
	if !strings.Contains(stderr.String(), `"hello-go stopping"`) {
		t.Errorf("no \"hello-go stopping\" line on stderr:\n%s", stderr.String())
	}
}
