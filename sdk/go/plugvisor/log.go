package plugvisor

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// LevelTrace is the level below slog.LevelDebug; [Host.Logger] sends it as
// the host's TRACE.
const LevelTrace = slog.Level(-8)

// logWriteTimeout bounds one record's call to the host, so a stuck host
// cannot hold up the code that logs for long.
const logWriteTimeout = 5 * time.Second

// hostLevel maps a slog level onto plugvisor.v1.LogLevel: everything below
// Debug is TRACE, and each level up to the next named one keeps its name.
func hostLevel(l slog.Level) plugvisorv1.LogLevel {
	switch {
	case l < slog.LevelDebug:
		return plugvisorv1.LogLevel_LOG_LEVEL_TRACE
	case l < slog.LevelInfo:
		return plugvisorv1.LogLevel_LOG_LEVEL_DEBUG
	case l < slog.LevelWarn:
		return plugvisorv1.LogLevel_LOG_LEVEL_INFO
	case l < slog.LevelError:
		return plugvisorv1.LogLevel_LOG_LEVEL_WARN
	default:
		return plugvisorv1.LogLevel_LOG_LEVEL_ERROR
	}
}

// hostHandler is a slog.Handler that writes records to plugvisor.v1.Log.
type hostHandler struct {
	client   plugvisorv1.LogClient
	level    slog.Leveler
	fields   map[string]string // from WithAttrs, already prefixed
	prefix   string            // from WithGroup: "a.b."
	fallback slog.Handler
}

func newHostHandler(client plugvisorv1.LogClient, level slog.Leveler, fallback slog.Handler) *hostHandler {
	return &hostHandler{client: client, level: level, fallback: fallback}
}

func (h *hostHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *hostHandler) Handle(ctx context.Context, r slog.Record) error {
	fields := make(map[string]string, len(h.fields)+r.NumAttrs())
	for k, v := range h.fields {
		fields[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(fields, h.prefix, a)
		return true
	})
	// A cancelled request must not lose the line that says so.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), logWriteTimeout)
	defer cancel()
	_, err := h.client.Write(ctx, &plugvisorv1.LogWriteRequest{
		Level:   hostLevel(r.Level),
		Message: r.Message,
		Fields:  fields,
	})
	if err != nil {
		r = r.Clone()
		r.AddAttrs(slog.String("host_log_error", err.Error()))
		_ = h.fallback.Handle(ctx, r)
		return err
	}
	return nil
}

func (h *hostHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	c := *h
	c.fields = make(map[string]string, len(h.fields)+len(attrs))
	for k, v := range h.fields {
		c.fields[k] = v
	}
	for _, a := range attrs {
		addField(c.fields, h.prefix, a)
	}
	c.fallback = h.fallback.WithAttrs(attrs)
	return &c
}

func (h *hostHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	c.fallback = h.fallback.WithGroup(name)
	return &c
}

// addField flattens an attribute into fields: a group's members get its
// name as a prefix, and an empty attribute is left out, as slog's own
// handlers do.
func addField(fields map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		members := a.Value.Group()
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, m := range members {
			addField(fields, prefix, m)
		}
		return
	}
	var text string
	switch a.Value.Kind() {
	case slog.KindTime:
		text = a.Value.Time().Format(time.RFC3339Nano)
	default:
		text = a.Value.String()
	}
	fields[prefix+a.Key] = text
}

// newStderrHandler writes hclog-style JSON lines ("@level", "@message",
// "@timestamp"), which plugvisor and go-plugin read from a plugin's stderr
// as structured records.
func newStderrHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
			case slog.MessageKey:
				a.Key = "@message"
			case slog.LevelKey:
				a.Key = "@level"
				l, _ := a.Value.Any().(slog.Level)
				a.Value = slog.StringValue(hclogLevel(l))
			}
			return a
		},
	})
}

func hclogLevel(l slog.Level) string {
	name := hostLevel(l).String() // LOG_LEVEL_WARN
	return strings.ToLower(strings.TrimPrefix(name, "LOG_LEVEL_"))
}
