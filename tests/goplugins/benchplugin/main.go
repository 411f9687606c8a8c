// Command benchplugin is bench/'s Go plugin: one http.Handler, served
// either as a plugvisor plugin through the Go SDK (plugvisor.v1.Http, behind
// plugvisor's /plugins/{id}/ proxy) or, with -direct ADDR, by net/http itself
// on a TCP listener, so that bench/ can set the two side by side with the
// very same handler code; and host API kv calls timed from inside the
// plugin. Not part of the test suite; scripts/setup-go builds it as
// target/go/benchplugin.
//
//	GET  /small            13 bytes of text (the requests-per-second row)
//	GET  /download?size=N  N bytes, written 64 KiB at a time
//	POST /upload           read the body to the end; {"bytes": N}
//	GET  /bench/kv?op=get|set&n=N&size=B
//	                       (plugin only) N host API kv calls, each timed:
//	                       {"latencies_us": [...]}. Unlike the SDK test
//	                       plugin's endpoint, every Set writes a value that
//	                       differs from the one before: SQLite does not
//	                       write a row whose new value equals the old one, so
//	                       a Set of the same value commits nothing, and no
//	                       fsync is timed.
//
// With -direct ADDR it prints "http://HOST:PORT" on stdout once it listens
// (ADDR may use port 0) and serves until SIGTERM or SIGINT.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
)

var small = []byte("hello, world\n")

func handler(p *plugin) http.Handler {
	m := http.NewServeMux()
	if p != nil {
		m.HandleFunc("GET /bench/kv", p.benchKV)
	}
	m.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		_, _ = w.Write(small)
	})
	m.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = byte('a' + i%26)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			c := chunk
			if int64(len(c)) > n {
				c = c[:n]
			}
			if _, err := w.Write(c); err != nil {
				return
			}
			n -= int64(len(c))
		}
	})
	m.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"bytes": n})
	})
	return m
}

// plugin is the plugvisor side: OnActivate (for the host API) and ServeHTTP.
type plugin struct {
	http.Handler
	host *plugvisor.Host
}

func (p *plugin) OnActivate(_ context.Context, host *plugvisor.Host) error {
	p.host = host
	return nil
}

// benchKV times n host API calls one after the other, in microseconds.
func (p *plugin) benchKV(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	size, _ := strconv.Atoi(q.Get("size"))
	op := q.Get("op")
	if n < 1 || size < 1 || (op != "get" && op != "set") {
		http.Error(w, "want op=get|set, n>=1 and size>=1", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	kv := p.host.KV()
	value := bytes.Repeat([]byte("v"), size)
	if err := kv.Set(ctx, "bench", value); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		value[0] = byte('a' + i%26)
		t := time.Now()
		var err error
		if op == "get" {
			_, _, err = kv.Get(ctx, "bench")
		} else {
			err = kv.Set(ctx, "bench", value)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"op": op, "n": n, "size": size, "latencies_us": lat})
}

func main() {
	direct := flag.String("direct", "", "serve the handler with net/http on this address instead of as a plugin")
	flag.Parse()
	if *direct == "" {
		p := &plugin{}
		p.Handler = handler(p)
		if err := plugvisor.Serve(p); err != nil {
			log.Fatal(err)
		}
		return
	}
	ln, err := net.Listen("tcp", *direct)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler(nil)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	fmt.Printf("http://%s\n", ln.Addr())
	_ = os.Stdout.Sync()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
