package plugvisortest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// HostVersion is what [Plugin.Activate] tells the plugin the host is.
const HostVersion = "plugvisortest"

// Config says how to start a plugin.
type Config struct {
	// Cmd is the plugin's command. go-plugin adds its environment (the magic
	// cookie, PLUGIN_PROTOCOL_VERSIONS, PLUGIN_CLIENT_CERT with AutoMTLS) to
	// Cmd.Env, after the test process's own.
	Cmd *exec.Cmd
	// AutoMTLS turns on go-plugin's AutoMTLS: the plugin's connection and
	// the brokered host API connection are mutual TLS.
	AutoMTLS bool
	// Handshake defaults to plugvisor.Handshake.
	Handshake *plugin.HandshakeConfig
	// Host serves the host API; nil means a fresh NewHost().
	Host *Host
	// Services registers the embedder's own host services (such as
	// chat.v1.ChatApi) beside the Host's, on the host API connection.
	Services []func(s *grpc.Server)
	// Logger is go-plugin's client logger, which also carries the plugin's
	// stderr lines. nil discards them.
	Logger hclog.Logger
	// StartTimeout bounds the wait for the handshake; 0 means 10 s.
	StartTimeout time.Duration
}

// Plugin is a running plugin process under go-plugin's host.
type Plugin struct {
	// Client is go-plugin's client for the process.
	Client *plugin.Client
	// Conn is the host's gRPC connection to the plugin.
	Conn *grpc.ClientConn
	// Broker is the host side of go-plugin's broker.
	Broker *plugin.GRPCBroker
	// Host serves the plugin's host API.
	Host *Host
	// Lifecycle and HTTP call the plugin's plugvisor.v1 services directly.
	Lifecycle plugvisorv1.LifecycleClient
	HTTP      plugvisorv1.HttpClient
	// RemoteAddr is the client address RoundTrip reports; default
	// "192.0.2.10:40000".
	RemoteAddr string

	services []func(*grpc.Server)

	mu          sync.Mutex
	pluginID    string
	implemented *plugvisorv1.ImplementedResponse
}

// session is what the host side of the plugin set dispenses.
type session struct {
	broker *plugin.GRPCBroker
	conn   *grpc.ClientConn
}

type hostSide struct {
	plugin.NetRPCUnsupportedPlugin
}

func (hostSide) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("plugvisortest is the host side only")
}

func (hostSide) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return &session{broker: broker, conn: conn}, nil
}

// Start starts the plugin and connects to it; it does not activate it.
// Kill the Plugin when done, also after an error here.
func Start(cfg Config) (*Plugin, error) {
	if cfg.Cmd == nil {
		return nil, errors.New("plugvisortest: Config.Cmd is nil")
	}
	handshake := plugvisor.Handshake
	if cfg.Handshake != nil {
		handshake = *cfg.Handshake
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	host := cfg.Host
	if host == nil {
		host = NewHost()
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{plugvisor.PluginName: hostSide{}},
		Cmd:              cfg.Cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         cfg.AutoMTLS,
		StartTimeout:     timeout,
		Logger:           logger,
	})
	p := &Plugin{Client: client, Host: host, RemoteAddr: "192.0.2.10:40000", services: cfg.Services}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugvisortest: starting the plugin: %w", err)
	}
	raw, err := rpc.Dispense(plugvisor.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugvisortest: %w", err)
	}
	s := raw.(*session)
	p.Conn, p.Broker = s.conn, s.broker
	p.Lifecycle = plugvisorv1.NewLifecycleClient(s.conn)
	p.HTTP = plugvisorv1.NewHttpClient(s.conn)
	return p, nil
}

// Kill stops the plugin the way go-plugin's host does
// (plugin.GRPCController/Shutdown, then SIGKILL after 2 s).
func (p *Plugin) Kill() { p.Client.Kill() }

// Implemented is the plugin's answer to Implemented from Activate; nil
// before, or when the plugin does not serve plugvisor.v1.Lifecycle.
func (p *Plugin) Implemented() *plugvisorv1.ImplementedResponse {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.implemented
}

func (p *Plugin) lists(hook string) bool {
	impl := p.Implemented()
	return impl != nil && slices.Contains(impl.GetHooks(), hook)
}

// Activate does what plugvisor does once a plugin is healthy: it asks
// Implemented, serves the host API on a new broker id if the plugin serves
// plugin.GRPCBroker, and calls OnActivate with that id. configJSON becomes
// the Host's configuration. A plugin without plugvisor.v1.Lifecycle gets no
// OnActivate: the response is nil, the error too.
func (p *Plugin) Activate(ctx context.Context, pluginID, configJSON string) (*plugvisorv1.OnActivateResponse, error) {
	impl, err := p.Lifecycle.Implemented(ctx, &plugvisorv1.ImplementedRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plugvisortest: Implemented: %w", err)
	}
	p.mu.Lock()
	p.implemented, p.pluginID = impl, pluginID
	p.mu.Unlock()

	var id uint32
	if slices.Contains(impl.GetServices(), "plugin.GRPCBroker") {
		id = p.Broker.NextId()
		// Sends the ConnInfo on the broker stream, then serves until the
		// broker closes (Kill).
		go p.Broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(opts...)
			p.Host.Register(s)
			for _, register := range p.services {
				register(s)
			}
			return s
		})
	}
	p.Host.SetConfiguration(configJSON)
	resp, err := p.Lifecycle.OnActivate(ctx, &plugvisorv1.OnActivateRequest{
		PluginId:          pluginID,
		ConfigurationJson: configJSON,
		HostApiBrokerId:   id,
		HostVersion:       HostVersion,
	})
	if err != nil {
		return nil, fmt.Errorf("plugvisortest: OnActivate: %w", err)
	}
	return resp, nil
}

// ChangeConfiguration does what plugvisor does when the operator changes
// the configuration: OnConfigurationChange if the plugin listed it, and the
// Host's configuration becomes configJSON unless the plugin refused.
func (p *Plugin) ChangeConfiguration(ctx context.Context, configJSON string) (*plugvisorv1.OnConfigurationChangeResponse, error) {
	resp := &plugvisorv1.OnConfigurationChangeResponse{}
	if p.lists("OnConfigurationChange") {
		var err error
		resp, err = p.Lifecycle.OnConfigurationChange(ctx, &plugvisorv1.OnConfigurationChangeRequest{ConfigurationJson: configJSON})
		if err != nil {
			return nil, fmt.Errorf("plugvisortest: OnConfigurationChange: %w", err)
		}
	}
	if resp.GetRefused() == nil {
		p.Host.SetConfiguration(configJSON)
	}
	return resp, nil
}

// Deactivate calls OnDeactivate if the plugin listed it.
func (p *Plugin) Deactivate(ctx context.Context) error {
	if !p.lists("OnDeactivate") {
		return nil
	}
	if _, err := p.Lifecycle.OnDeactivate(ctx, &plugvisorv1.OnDeactivateRequest{}); err != nil {
		return fmt.Errorf("plugvisortest: OnDeactivate: %w", err)
	}
	return nil
}

// RoundTrip sends req to the plugin's HTTP handler over plugvisor.v1.Http,
// as plugvisor forwards a request for /plugins/{id}/...: req.URL's path is
// the path after the mount path. The request body is streamed; so is the
// response body, and a call that ends with an error status makes reading it
// fail. Cancelling req's context cancels the call. It makes Plugin an
// http.RoundTripper: &http.Client{Transport: p}.
func (p *Plugin) RoundTrip(req *http.Request) (*http.Response, error) {
	p.mu.Lock()
	pluginID := p.pluginID
	p.mu.Unlock()

	ctx, cancel := context.WithCancel(req.Context())
	stream, err := p.HTTP.ServeHTTP(ctx)
	if err != nil {
		cancel()
		closeBody(req)
		return nil, err
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	headers := []*plugvisorv1.HttpHeader{{Name: "host", Value: []byte(host)}}
	for name, values := range req.Header {
		for _, v := range values {
			headers = append(headers, &plugvisorv1.HttpHeader{Name: strings.ToLower(name), Value: []byte(v)})
		}
	}
	if req.ContentLength > 0 && req.Header.Get("Content-Length") == "" {
		headers = append(headers, &plugvisorv1.HttpHeader{Name: "content-length", Value: fmt.Appendf(nil, "%d", req.ContentLength)})
	}
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = "http"
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	err = stream.Send(&plugvisorv1.HttpRequestPart{Part: &plugvisorv1.HttpRequestPart_Head{Head: &plugvisorv1.HttpRequestHead{
		Method:      method,
		Path:        path,
		Query:       req.URL.RawQuery,
		Headers:     headers,
		RemoteAddr:  p.RemoteAddr,
		PluginId:    pluginID,
		MountPath:   "/plugins/" + pluginID,
		HttpVersion: "HTTP/1.1",
		Scheme:      scheme,
	}}})
	if err != nil {
		cancel()
		closeBody(req)
		return nil, err
	}
	go sendBody(stream, req, cancel)

	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("plugvisortest: no response head: %w", err)
	}
	head := first.GetHead()
	if head == nil {
		cancel()
		return nil, errors.New("plugvisortest: the plugin's first HttpResponsePart is not the head")
	}
	resp := &http.Response{
		Status:        fmt.Sprintf("%d %s", head.GetStatus(), http.StatusText(int(head.GetStatus()))),
		StatusCode:    int(head.GetStatus()),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header),
		ContentLength: -1,
		Request:       req,
		Body:          &responseBody{stream: stream, cancel: cancel},
	}
	for _, h := range head.GetHeaders() {
		resp.Header.Add(h.GetName(), string(h.GetValue()))
	}
	return resp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// sendBody streams the request body and half-closes; a failure cancels
// the call, as a client that breaks off its upload would.
func sendBody(stream plugvisorv1.Http_ServeHTTPClient, req *http.Request, cancel context.CancelFunc) {
	if req.Body != nil {
		defer req.Body.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				chunk := append([]byte(nil), buf[:n]...)
				if serr := stream.Send(&plugvisorv1.HttpRequestPart{Part: &plugvisorv1.HttpRequestPart_Body{Body: chunk}}); serr != nil {
					return // the call is over; Recv reports why
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				cancel()
				return
			}
		}
	}
	_ = stream.CloseSend()
}

// responseBody reads the body parts of the response; flushes are skipped.
type responseBody struct {
	stream plugvisorv1.Http_ServeHTTPClient
	cancel context.CancelFunc
	buf    []byte
	err    error
}

func (b *responseBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		part, err := b.stream.Recv()
		switch {
		case err == io.EOF:
			b.err = io.EOF
		case err != nil:
			b.err = fmt.Errorf("plugvisortest: the response broke off: %w", err)
		default:
			b.buf = part.GetBody()
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

func (b *responseBody) Close() error {
	b.cancel()
	return nil
}
