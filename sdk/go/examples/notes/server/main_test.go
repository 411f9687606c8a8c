package main

// The README's example plugin, run under go-plugin's host playing
// plugvisor's part; and a check that README.md shows this very file.

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
)

func TestTheREADMEShowsThisExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+string(code)+"```\n") {
		t.Error("sdk/go/README.md does not show examples/notes/server/main.go as it is; copy the file into its code block")
	}
}

func TestNotesUnderGoPluginsHost(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "notes")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(goCmd, "build", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PLUGIN_UNIX_SOCKET_DIR="+dir)
	p, err := plugvisortest.Start(plugvisortest.Config{Cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := p.Activate(ctx, "notes", `{"title": "My notes", "max_bytes": 8}`); err != nil || resp.GetRefused() != nil {
		t.Fatalf("activation: %v %v", resp, err)
	}
	client := &http.Client{Transport: p}
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, "http://chat.example"+path, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := call("PUT", "/notes/todo", "milk"); code != http.StatusNoContent {
		t.Errorf("PUT = %d", code)
	}
	if code, body := call("GET", "/notes/todo", ""); code != 200 || body != "milk" {
		t.Errorf("GET = %d %q", code, body)
	}
	if code, _ := call("PUT", "/notes/long", "more than eight bytes"); code != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT over max_bytes = %d", code)
	}
	if code, body := call("GET", "/", ""); code != 200 || body != "My notes: 1 notes\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	if v, _ := p.Host.Value("note/todo"); string(v) != "milk" {
		t.Errorf("the host's store holds %q", v)
	}
	if resp, err := p.ChangeConfiguration(ctx, `{"title": ""}`); err != nil || resp.GetRefused().GetMessage() != "the title setting is empty" {
		t.Errorf("refused change: %v %v", resp, err)
	}
}
