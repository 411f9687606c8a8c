package plugvisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// MaxBodyChunk is the most response body bytes one message to the host
// carries; a longer Write is split.
const MaxBodyChunk = 64 << 10

type mountKey struct{}

// MountPath returns where the host mounts the plugin's HTTP handler, such as
// "/plugins/hello-go", for a request the SDK made; "" for any other. The
// request's URL.Path is the part after it, so an absolute link to the
// plugin's "/status.json" is MountPath(r) + "/status.json".
func MountPath(r *http.Request) string {
	m, _ := r.Context().Value(mountKey{}).(string)
	return m
}

// httpServer serves plugvisor.v1.Http with the plugin's http.Handler.
type httpServer struct {
	plugvisorv1.UnimplementedHttpServer
	srv *server
}

func (s *httpServer) ServeHTTP(stream plugvisorv1.Http_ServeHTTPServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	head := first.GetHead()
	if head == nil {
		return status.Error(codes.InvalidArgument, "plugvisor SDK: the first HttpRequestPart must be the head")
	}
	w := &responseWriter{stream: stream, header: make(http.Header), isHead: head.GetMethod() == http.MethodHead}
	req, badRequest := newRequest(stream, head)
	if badRequest != "" {
		// As net/http answers a request it cannot parse.
		w.header.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "400 Bad Request: "+badRequest)
		return w.finish()
	}

	if p := s.serve(w, req); p != nil {
		w.abort()
		if p.value == http.ErrAbortHandler {
			return status.Error(codes.Aborted, "the handler aborted the response (http.ErrAbortHandler)")
		}
		s.srv.logger.Error("http: panic serving request", "method", req.Method, "path", req.URL.Path,
			"remote_addr", req.RemoteAddr, "panic", fmt.Sprint(p.value), "stack", p.stack)
		return status.Errorf(codes.Internal, "the handler panicked: %v", p.value)
	}
	if err := stream.Context().Err(); err != nil {
		w.abort()
		return status.FromContextError(err).Err()
	}
	return w.finish()
}

type handlerPanic struct {
	value any
	stack string
}

func (s *httpServer) serve(w http.ResponseWriter, req *http.Request) (p *handlerPanic) {
	defer func() {
		if v := recover(); v != nil {
			p = &handlerPanic{value: v, stack: string(debug.Stack())}
		}
	}()
	s.srv.handler.ServeHTTP(w, req)
	return nil
}

// newRequest builds the request net/http's server would have built for
// head; the second result says why there is none (a 400).
func newRequest(stream plugvisorv1.Http_ServeHTTPServer, head *plugvisorv1.HttpRequestHead) (*http.Request, string) {
	method := head.GetMethod()
	if method == "" {
		method = http.MethodGet
	}
	target := head.GetPath()
	if !strings.HasPrefix(target, "/") {
		target = "/" + target
	}
	if q := head.GetQuery(); q != "" {
		target += "?" + q
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, "malformed path or query: " + err.Error()
	}
	proto := head.GetHttpVersion()
	switch proto {
	case "":
		proto = "HTTP/1.1"
	case "HTTP/2":
		proto = "HTTP/2.0" // what net/http's HTTP/2 server says
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return nil, "unknown HTTP version " + strconv.Quote(head.GetHttpVersion())
	}

	header := make(http.Header, len(head.GetHeaders()))
	host := ""
	for _, h := range head.GetHeaders() {
		name := textproto.CanonicalMIMEHeaderKey(h.GetName())
		value := string(h.GetValue())
		if name == "Host" {
			// net/http moves it to Request.Host.
			if host == "" {
				host = value
			}
			continue
		}
		header[name] = append(header[name], value)
	}

	contentLength := int64(-1)
	if cl := header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		if err != nil || n < 0 {
			return nil, "bad Content-Length " + strconv.Quote(cl)
		}
		contentLength = n
	}

	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         proto,
		ProtoMajor:    major,
		ProtoMinor:    minor,
		Header:        header,
		ContentLength: contentLength,
		Host:          host,
		RemoteAddr:    head.GetRemoteAddr(),
		RequestURI:    target,
	}
	if contentLength == 0 {
		req.Body = http.NoBody
	} else {
		req.Body = &requestBody{stream: stream, remaining: contentLength}
	}
	if head.GetScheme() == "https" {
		// The host terminated TLS; handlers test r.TLS != nil for https.
		serverName, _, err := net.SplitHostPort(host)
		if err != nil {
			serverName = host
		}
		req.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: serverName}
	}
	ctx := context.WithValue(stream.Context(), mountKey{}, head.GetMountPath())
	return req.WithContext(ctx), ""
}

// requestBody reads the request body from the stream as the host sends it.
type requestBody struct {
	mu        sync.Mutex
	stream    plugvisorv1.Http_ServeHTTPServer
	buf       []byte
	err       error // sticky: io.EOF or the stream's failure
	remaining int64 // bytes Content-Length still allows; -1: no limit
	closed    atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.remaining == 0 {
			b.err = io.EOF
			continue
		}
		part, err := b.stream.Recv()
		switch {
		case err == io.EOF && b.remaining > 0:
			b.err = io.ErrUnexpectedEOF // shorter than its Content-Length
		case err != nil:
			b.err = err
		case part.GetHead() != nil:
			b.err = errors.New("plugvisor SDK: a second request head arrived in the body")
		default:
			b.buf = part.GetBody()
		}
	}
	if b.remaining >= 0 && int64(len(b.buf)) > b.remaining {
		b.buf = b.buf[:b.remaining] // as net/http, nothing past Content-Length
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	return n, nil
}

func (b *requestBody) Close() error {
	b.closed.Store(true)
	return nil
}

// responseWriter sends the response on the stream as the handler writes it:
// the head on WriteHeader or the first Write, the body in chunks of at most
// MaxBodyChunk, and HttpFlush on Flush.
type responseWriter struct {
	mu       sync.Mutex
	stream   plugvisorv1.Http_ServeHTTPServer
	header   http.Header
	isHead   bool
	status   int   // 0 until the head is sent
	err      error // the first failed send
	finished bool  // the handler returned: nothing more may be sent
}

var errHandlerReturned = errors.New("plugvisor SDK: the response was written after the handler returned")

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	// As net/http: a code that cannot be sent is the handler's bug.
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status != 0 || w.finished {
		return // superfluous, as net/http ignores it
	}
	if code < 200 {
		// The protocol carries one head; informational responses (103 Early
		// Hints and the like) are left out.
		return
	}
	w.sendHead(code)
}

// sendHead sends the head with the header as it is now; later changes to
// the header are not sent (trailers are not supported). Callers hold mu.
func (w *responseWriter) sendHead(code int) {
	w.status = code
	headers := make([]*plugvisorv1.HttpHeader, 0, len(w.header))
	for name, values := range w.header {
		lower := strings.ToLower(name)
		for _, v := range values {
			headers = append(headers, &plugvisorv1.HttpHeader{Name: lower, Value: []byte(v)})
		}
	}
	w.send(&plugvisorv1.HttpResponsePart{Part: &plugvisorv1.HttpResponsePart_Head{
		Head: &plugvisorv1.HttpResponseHead{Status: uint32(code), Headers: headers},
	}})
}

func (w *responseWriter) send(part *plugvisorv1.HttpResponsePart) {
	if w.err != nil {
		return
	}
	if err := w.stream.Send(part); err != nil {
		w.err = err
	}
}

// bodyAllowed reports whether a response with this status has a body
// (RFC 9110: not 1xx, 204 or 304).
func bodyAllowed(code int) bool {
	return !(code >= 100 && code <= 199 || code == http.StatusNoContent || code == http.StatusNotModified)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return 0, errHandlerReturned
	}
	if w.status == 0 {
		// As net/http: sniff a missing Content-Type from the first bytes.
		if _, ok := w.header["Content-Type"]; !ok && w.header.Get("Content-Encoding") == "" && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.sendHead(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.isHead {
		return len(p), nil // as net/http: a HEAD response's body is dropped
	}
	n := 0
	for n < len(p) {
		end := min(len(p), n+MaxBodyChunk)
		// No copy: Send encodes the message before it returns (the SDK's
		// server has no stats handler that could keep it), so p is not
		// retained, as io.Writer requires.
		w.send(&plugvisorv1.HttpResponsePart{Part: &plugvisorv1.HttpResponsePart_Body{Body: p[n:end]}})
		if w.err != nil {
			return n, w.err
		}
		n = end
	}
	return n, nil
}

// Flush sends the head if it is not sent yet and asks the host to pass
// everything written so far to the client now.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error, for http.ResponseController.
func (w *responseWriter) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return errHandlerReturned
	}
	if w.status == 0 {
		w.sendHead(http.StatusOK)
	}
	w.send(&plugvisorv1.HttpResponsePart{Part: &plugvisorv1.HttpResponsePart_Flush{Flush: &plugvisorv1.HttpFlush{}}})
	return w.err
}

// finish ends a response whose handler returned normally: a handler that
// wrote nothing gets 200 with an empty body, as from net/http. The error is
// what the call ends with; nil ends the response cleanly.
func (w *responseWriter) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.finished = true
	if w.status == 0 {
		if _, ok := w.header["Content-Length"]; !ok {
			w.header.Set("Content-Length", "0")
		}
		w.sendHead(http.StatusOK)
	}
	return w.err
}

// abort stops any further send, for a call that ends with an error.
func (w *responseWriter) abort() {
	w.mu.Lock()
	w.finished = true
	w.mu.Unlock()
}
