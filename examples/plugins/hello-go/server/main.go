// Command hello-go is the example Go plugin, made with plugvisor's Go SDK
// (sdk/go/plugvisor) on go-plugin v1.7.0. It does a little of everything a
// plugin does with its host:
//
//   - reads its settings (plugin.json's settings_schema: greeting, audience,
//     show_activations) in OnActivate, and refuses to start when the greeting
//     is empty or too long;
//   - counts its activations in the host's key-value store (a
//     compare-and-set loop, so two processes never lose a count);
//   - logs through the host API, with fields;
//   - takes new settings in OnConfigurationChange, refusing bad ones (the
//     old settings stay);
//   - serves an HTML page at / and its state as JSON at /status.json, under
//     /plugins/hello-go/, through net/http.
//
// Stopping: the host's GRPCController/Shutdown or SIGTERM makes Serve return,
// the socket is removed and the process exits 0.
//
// Build it for the manifest's current platform with scripts/setup-go, or:
//
//	go build -o examples/plugins/hello-go/server/dist/plugin-$(go env GOOS)-$(go env GOARCH) ./examples/plugins/hello-go/server
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
)

// maxGreeting is the longest greeting accepted, in characters.
const maxGreeting = 200

// activationsKey holds the activation count, in decimal.
const activationsKey = "activations"

// settings are plugin.json's settings_schema keys.
type settings struct {
	Greeting        string `json:"greeting"`
	Audience        string `json:"audience"`
	ShowActivations bool   `json:"show_activations"`
}

func (s settings) validate() error {
	switch n := utf8.RuneCountInString(s.Greeting); {
	case n == 0:
		return errors.New("the greeting setting is empty; set it to the words the page should start with")
	case n > maxGreeting:
		return fmt.Errorf("the greeting setting is %d characters long; the limit is %d", n, maxGreeting)
	}
	return nil
}

type helloPlugin struct {
	host        *plugvisor.Host
	activations int64
	activatedAt time.Time
	mux         *http.ServeMux

	mu       sync.RWMutex
	settings settings
}

func (p *helloPlugin) OnActivate(ctx context.Context, host *plugvisor.Host) error {
	var s settings
	if err := host.LoadConfiguration(&s); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err
	}
	n, err := countActivation(ctx, host.KV())
	if err != nil {
		return fmt.Errorf("counting the activation in the key-value store: %w", err)
	}
	p.host, p.settings, p.activations, p.activatedAt = host, s, n, time.Now()
	host.Logger().InfoContext(ctx, "hello-go activated", "activations", n, "greeting", s.Greeting, "host", host.Version())
	return nil
}

// countActivation adds one to the stored count and returns the new count.
// CompareAndSet retries when another process changed it in between.
func countActivation(ctx context.Context, kv *plugvisor.KV) (int64, error) {
	for {
		old, found, err := kv.Get(ctx, activationsKey)
		if err != nil {
			return 0, err
		}
		var n int64
		if found {
			if n, err = strconv.ParseInt(string(old), 10, 64); err != nil {
				return 0, fmt.Errorf("key %q holds %q, not a count", activationsKey, old)
			}
		} else {
			old = nil // "must not exist" for CompareAndSet
		}
		swapped, err := kv.CompareAndSet(ctx, activationsKey, old, []byte(strconv.FormatInt(n+1, 10)))
		if err != nil {
			return 0, err
		}
		if swapped {
			return n + 1, nil
		}
	}
}

func (p *helloPlugin) OnConfigurationChange(ctx context.Context, c plugvisor.Configuration) error {
	var s settings
	if err := c.Decode(&s); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		p.host.Logger().WarnContext(ctx, "refused a configuration change", "reason", err.Error())
		return err
	}
	p.mu.Lock()
	old := p.settings
	p.settings = s
	p.mu.Unlock()
	p.host.Logger().InfoContext(ctx, "configuration changed", "old_greeting", old.Greeting, "greeting", s.Greeting)
	return nil
}

func (p *helloPlugin) OnDeactivate(ctx context.Context) error {
	p.host.Logger().InfoContext(ctx, "hello-go deactivating", "up_for", time.Since(p.activatedAt).Round(time.Millisecond).String())
	return nil
}

func (p *helloPlugin) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// status is what /status.json answers.
type status struct {
	PluginID    string   `json:"plugin_id"`
	Host        string   `json:"host"`
	Settings    settings `json:"settings"`
	Activations int64    `json:"activations"`
	ActivatedAt string   `json:"activated_at"`
}

func (p *helloPlugin) status() status {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return status{
		PluginID:    p.host.PluginID(),
		Host:        p.host.Version(),
		Settings:    p.settings,
		Activations: p.activations,
		ActivatedAt: p.activatedAt.UTC().Format(time.RFC3339),
	}
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{.Status.Settings.Greeting}}</title></head>
<body>
<h1>{{.Status.Settings.Greeting}}, {{.Status.Settings.Audience}}!</h1>
{{if .Status.Settings.ShowActivations}}<p>This plugin has been activated {{.Status.Activations}} time{{if ne .Status.Activations 1}}s{{end}}.</p>
{{end}}<p>Served by {{.Status.PluginID}} on {{.Status.Host}}. <a href="{{.Mount}}/status.json">status.json</a></p>
</body>
</html>
`))

func (p *helloPlugin) routes() {
	p.mux = http.NewServeMux()
	p.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		err := page.Execute(w, struct {
			Status status
			Mount  string
		}{p.status(), plugvisor.MountPath(r)})
		if err != nil {
			p.host.Logger().ErrorContext(r.Context(), "rendering the page", "error", err.Error())
		}
	})
	p.mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.status())
	})
}

func main() {
	// Lines before activation, and the SDK's own, go to stderr as hclog
	// JSON, which the host reads with their levels.
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "hello-go",
		Level:      hclog.Info,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	logger.Info("hello-go starting", "pid", os.Getpid())
	p := &helloPlugin{}
	p.routes()
	if err := plugvisor.Serve(p, plugvisor.WithLogger(logger)); err != nil {
		logger.Error("hello-go could not serve", "error", err)
		os.Exit(1)
	}
	logger.Info("hello-go stopping", "reason", "serve returned")
}
