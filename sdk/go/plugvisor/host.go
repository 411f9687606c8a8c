package plugvisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// ErrNoHostAPI is returned by the host API's calls when the host offers
// none: OnActivate came with broker id 0, as from a host that does not play
// plugvisor's part.
var ErrNoHostAPI = errors.New("plugvisor: the host offers no host API (OnActivate's host_api_broker_id was 0)")

// Host is a plugin's view of its host, handed to [Activator.OnActivate]. It
// is safe for concurrent use and valid until the plugin process stops.
//
// The host API's calls return gRPC status errors, wrapped with the call's
// name: status.Code(err) is codes.InvalidArgument for a bad key or argument,
// codes.ResourceExhausted past a size or rate limit and codes.Unavailable
// when the host cannot serve the call, each with a message saying which.
type Host struct {
	pluginID string
	version  string
	conn     *grpc.ClientConn
	kv       *KV
	logger   *slog.Logger
	config   configurationClient

	mu            sync.RWMutex
	configuration Configuration
}

type configurationClient interface {
	Get(ctx context.Context, in *plugvisorv1.ConfigurationGetRequest, opts ...grpc.CallOption) (*plugvisorv1.ConfigurationGetResponse, error)
}

func newHost(req *plugvisorv1.OnActivateRequest, conn *grpc.ClientConn, s *server) *Host {
	h := &Host{
		pluginID:      req.GetPluginId(),
		version:       req.GetHostVersion(),
		conn:          conn,
		configuration: Configuration{raw: []byte(req.GetConfigurationJson())},
	}
	fallback := newStderrHandler(s.stderr, s.logLevel)
	if conn == nil {
		h.kv = &KV{}
		h.logger = slog.New(fallback)
		return h
	}
	h.kv = &KV{client: plugvisorv1.NewKeyValueClient(conn)}
	h.config = plugvisorv1.NewConfigurationClient(conn)
	h.logger = slog.New(newHostHandler(plugvisorv1.NewLogClient(conn), s.logLevel, fallback))
	return h
}

func (h *Host) close() {
	if h.conn != nil {
		_ = h.conn.Close()
	}
}

// PluginID is the plugin's id, as the host knows it (plugin.json's "id").
func (h *Host) PluginID() string { return h.pluginID }

// Version says which host this is, such as "plugvisor 0.2.0".
func (h *Host) Version() string { return h.version }

// Configuration is the plugin's configuration as last delivered: by
// OnActivate, then by each OnConfigurationChange the plugin accepted. A
// plugin without an OnConfigurationChange hook is not told of changes; see
// [Host.FetchConfiguration].
func (h *Host) Configuration() Configuration {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.configuration
}

func (h *Host) setConfiguration(c Configuration) {
	h.mu.Lock()
	h.configuration = c
	h.mu.Unlock()
}

// LoadConfiguration decodes [Host.Configuration] into v, a pointer to the
// plugin's own configuration struct, as Mattermost's
// LoadPluginConfiguration does: encoding/json rules, keys not in the struct
// ignored.
func (h *Host) LoadConfiguration(v any) error {
	return h.Configuration().Decode(v)
}

// FetchConfiguration asks the host for the plugin's effective configuration
// now (plugvisor.v1.Configuration/Get).
func (h *Host) FetchConfiguration(ctx context.Context) (Configuration, error) {
	if h.config == nil {
		return Configuration{}, ErrNoHostAPI
	}
	resp, err := h.config.Get(ctx, &plugvisorv1.ConfigurationGetRequest{})
	if err != nil {
		return Configuration{}, fmt.Errorf("plugvisor: Configuration.Get: %w", err)
	}
	return Configuration{raw: []byte(resp.GetConfigurationJson())}, nil
}

// KV is the plugin's key-value store on the host.
func (h *Host) KV() *KV { return h.kv }

// Logger returns a logger whose records go to the host's log
// (plugvisor.v1.Log), with their level and attributes as fields; groups
// prefix their attributes' names ("req.id"). Each record is one call to the
// host, made before the logging call returns; the record's time is the
// host's. A record the host cannot take is written to stderr instead, which
// the host also reads. Without a host API every record goes to stderr.
func (h *Host) Logger() *slog.Logger { return h.logger }

// Conn is the host API connection, for the embedder's own services served
// beside plugvisor's (such as chat.v1.ChatApi):
//
//	users := chatv1.NewChatApiClient(host.Conn())
//
// It is nil when the host offers no host API. The SDK closes it when the
// plugin stops.
func (h *Host) Conn() *grpc.ClientConn { return h.conn }

// Configuration is a plugin's configuration as the host delivers it: a JSON
// object, the settings_schema defaults of plugin.json overlaid with the
// operator's values.
type Configuration struct {
	raw []byte
}

// JSON returns the configuration's JSON text ("{}" when the host sent
// none). The caller must not modify it.
func (c Configuration) JSON() []byte {
	if len(c.raw) == 0 {
		return []byte("{}")
	}
	return c.raw
}

// Decode decodes the configuration into v, a pointer to the plugin's own
// struct, with encoding/json's rules; keys not in the struct are ignored.
func (c Configuration) Decode(v any) error {
	if err := json.Unmarshal(c.JSON(), v); err != nil {
		return fmt.Errorf("plugvisor: decoding the configuration: %w", err)
	}
	return nil
}

// KV is a plugin's key-value store on the host (plugvisor.v1.KeyValue): one
// namespace per plugin, durable once a write has returned. Keys are
// non-empty UTF-8 strings; values are bytes.
type KV struct {
	client plugvisorv1.KeyValueClient
}

// Get returns the value of key, and whether there is one.
func (kv *KV) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	if kv.client == nil {
		return nil, false, ErrNoHostAPI
	}
	resp, err := kv.client.Get(ctx, &plugvisorv1.KvGetRequest{Key: key})
	if err != nil {
		return nil, false, fmt.Errorf("plugvisor: KeyValue.Get %q: %w", key, err)
	}
	return resp.GetValue(), resp.GetFound(), nil
}

// Set stores value under key. A nil value stores an empty one; use
// [KV.Delete] to remove a key.
func (kv *KV) Set(ctx context.Context, key string, value []byte) error {
	if kv.client == nil {
		return ErrNoHostAPI
	}
	if _, err := kv.client.Set(ctx, &plugvisorv1.KvSetRequest{Key: key, Value: value}); err != nil {
		return fmt.Errorf("plugvisor: KeyValue.Set %q: %w", key, err)
	}
	return nil
}

// Delete removes key, and says whether it had a value.
func (kv *KV) Delete(ctx context.Context, key string) (existed bool, err error) {
	if kv.client == nil {
		return false, ErrNoHostAPI
	}
	resp, err := kv.client.Delete(ctx, &plugvisorv1.KvDeleteRequest{Key: key})
	if err != nil {
		return false, fmt.Errorf("plugvisor: KeyValue.Delete %q: %w", key, err)
	}
	return resp.GetExisted(), nil
}

// List returns every key that starts with prefix (every key for ""), in
// byte order. It asks the host a page at a time until it has them all.
func (kv *KV) List(ctx context.Context, prefix string) ([]string, error) {
	if kv.client == nil {
		return nil, ErrNoHostAPI
	}
	var keys []string
	after := ""
	for {
		resp, err := kv.client.List(ctx, &plugvisorv1.KvListRequest{Prefix: prefix, StartAfter: after})
		if err != nil {
			return nil, fmt.Errorf("plugvisor: KeyValue.List %q: %w", prefix, err)
		}
		keys = append(keys, resp.GetKeys()...)
		if !resp.GetMore() {
			return keys, nil
		}
		page := resp.GetKeys()
		if len(page) == 0 || page[len(page)-1] <= after {
			// A page that does not move forward would loop for ever.
			return nil, fmt.Errorf("plugvisor: KeyValue.List %q: the host said more keys follow %q but sent none after it", prefix, after)
		}
		after = page[len(page)-1]
	}
}

// CompareAndSet sets key to value only if its current value is expected,
// and says whether it did. A nil expected means the key must not exist; a
// nil value deletes the key. Use []byte{} for an empty value.
func (kv *KV) CompareAndSet(ctx context.Context, key string, expected, value []byte) (swapped bool, err error) {
	if kv.client == nil {
		return false, ErrNoHostAPI
	}
	resp, err := kv.client.CompareAndSet(ctx, &plugvisorv1.KvCompareAndSetRequest{Key: key, Expected: expected, Value: value})
	if err != nil {
		return false, fmt.Errorf("plugvisor: KeyValue.CompareAndSet %q: %w", key, err)
	}
	return resp.GetSwapped(), nil
}
