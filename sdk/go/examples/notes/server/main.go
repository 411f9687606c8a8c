// Command notes is a plugvisor plugin: it keeps notes in the host's
// key-value store and serves them under /plugins/notes/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
)

// settings mirror plugin.json's settings_schema.
type settings struct {
	Title    string `json:"title"`
	MaxBytes int    `json:"max_bytes"`
}

func (s settings) validate() error {
	if s.Title == "" {
		return errors.New("the title setting is empty")
	}
	return nil
}

type notes struct {
	host *plugvisor.Host
	mux  *http.ServeMux

	mu       sync.RWMutex
	settings settings
}

// OnActivate: read the settings, keep the host, say hello in the host's log.
func (p *notes) OnActivate(ctx context.Context, host *plugvisor.Host) error {
	var s settings
	if err := host.LoadConfiguration(&s); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err // refused: the operator sees this text
	}
	p.host, p.settings = host, s
	host.Logger().InfoContext(ctx, "notes activated", "title", s.Title)
	return nil
}

// OnConfigurationChange: take new settings, or refuse them.
func (p *notes) OnConfigurationChange(ctx context.Context, c plugvisor.Configuration) error {
	var s settings
	if err := c.Decode(&s); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err // the previous settings stay
	}
	p.mu.Lock()
	p.settings = s
	p.mu.Unlock()
	return nil
}

// ServeHTTP makes the plugin an http.Handler: the host's requests for
// /plugins/notes/... arrive here with the mount path stripped.
func (p *notes) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

func (p *notes) routes() {
	p.mux = http.NewServeMux()
	p.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		keys, err := p.host.KV().List(r.Context(), "note/")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		p.mu.RLock()
		title := p.settings.Title
		p.mu.RUnlock()
		fmt.Fprintf(w, "%s: %d notes\n", title, len(keys))
	})
	p.mux.HandleFunc("PUT /notes/{name}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.RLock()
		limit := int64(p.settings.MaxBytes)
		p.mu.RUnlock()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if err := p.host.KV().Set(r.Context(), "note/"+r.PathValue("name"), body); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		p.host.Logger().InfoContext(r.Context(), "note saved", "name", r.PathValue("name"), "bytes", len(body))
		w.WriteHeader(http.StatusNoContent)
	})
	p.mux.HandleFunc("GET /notes/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, found, err := p.host.KV().Get(r.Context(), "note/"+r.PathValue("name"))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadGateway)
		case !found:
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(body)
		}
	})
}

func main() {
	p := &notes{}
	p.routes()
	if err := plugvisor.Serve(p); err != nil {
		log.Fatal(err)
	}
	// Serve returned: the host stopped the plugin. Clean up here.
}
