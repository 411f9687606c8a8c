package plugvisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

// fakeLog records Log.Write requests, or fails them with err.
type fakeLog struct {
	reqs []*plugvisorv1.LogWriteRequest
	err  error
}

func (f *fakeLog) Write(_ context.Context, req *plugvisorv1.LogWriteRequest, _ ...grpc.CallOption) (*plugvisorv1.LogWriteResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.reqs = append(f.reqs, req)
	return &plugvisorv1.LogWriteResponse{}, nil
}

func TestHostLoggerFlattensAttributesIntoFields(t *testing.T) {
	f := &fakeLog{}
	l := slog.New(newHostHandler(f, LevelTrace, newStderrHandler(&bytes.Buffer{}, LevelTrace)))
	when := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	l.With("a", 1).WithGroup("g").Info("m",
		"b", 2,
		slog.Group("", "inline", 3), // an unnamed group's members are inlined
		slog.Group("empty"),         // an empty group is left out
		slog.Attr{},                 // so is an empty attribute
		slog.Group("sub", "c", "x"),
		"at", when,
		"err", errors.New("boom"),
	)
	if len(f.reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(f.reqs))
	}
	want := map[string]string{
		"a": "1", "g.b": "2", "g.inline": "3", "g.sub.c": "x",
		"g.at": "2026-01-02T03:04:05.000000006Z", "g.err": "boom",
	}
	if got := f.reqs[0].GetFields(); !maps.Equal(got, want) {
		t.Errorf("fields = %v\nwant     %v", got, want)
	}
	if f.reqs[0].GetMessage() != "m" || f.reqs[0].GetLevel() != plugvisorv1.LogLevel_LOG_LEVEL_INFO {
		t.Errorf("message %q level %v", f.reqs[0].GetMessage(), f.reqs[0].GetLevel())
	}
}

func TestHostLevelMapsEverySlogLevel(t *testing.T) {
	for level, want := range map[slog.Level]plugvisorv1.LogLevel{
		LevelTrace - 4:      plugvisorv1.LogLevel_LOG_LEVEL_TRACE,
		LevelTrace:          plugvisorv1.LogLevel_LOG_LEVEL_TRACE,
		slog.LevelDebug - 1: plugvisorv1.LogLevel_LOG_LEVEL_TRACE,
		slog.LevelDebug:     plugvisorv1.LogLevel_LOG_LEVEL_DEBUG,
		slog.LevelInfo - 1:  plugvisorv1.LogLevel_LOG_LEVEL_DEBUG,
		slog.LevelInfo:      plugvisorv1.LogLevel_LOG_LEVEL_INFO,
		slog.LevelWarn - 1:  plugvisorv1.LogLevel_LOG_LEVEL_INFO,
		slog.LevelWarn:      plugvisorv1.LogLevel_LOG_LEVEL_WARN,
		slog.LevelError:     plugvisorv1.LogLevel_LOG_LEVEL_ERROR,
		slog.LevelError + 4: plugvisorv1.LogLevel_LOG_LEVEL_ERROR,
	} {
		if got := hostLevel(level); got != want {
			t.Errorf("hostLevel(%v) = %v, want %v", level, got, want)
		}
	}
}

func TestHostLoggerHonoursItsLevel(t *testing.T) {
	f := &fakeLog{}
	l := slog.New(newHostHandler(f, slog.LevelInfo, newStderrHandler(&bytes.Buffer{}, slog.LevelInfo)))
	l.Debug("dropped")
	l.Info("sent")
	if len(f.reqs) != 1 || f.reqs[0].GetMessage() != "sent" {
		t.Errorf("requests %v, want only the Info record", f.reqs)
	}
}

// A record the host refuses goes to stderr as an hclog-style JSON line,
// with the host's error, so it is not lost.
func TestHostLoggerFallsBackToStderr(t *testing.T) {
	var stderr bytes.Buffer
	f := &fakeLog{err: status.Error(codes.ResourceExhausted, "log rate limit")}
	l := slog.New(newHostHandler(f, LevelTrace, newStderrHandler(&stderr, LevelTrace)))
	l.With("k", "v").WithGroup("g").Warn("disk almost full", "free", "1%")
	var line map[string]any
	if err := json.Unmarshal(stderr.Bytes(), &line); err != nil {
		t.Fatalf("stderr %q is not one JSON line: %v", stderr.String(), err)
	}
	g, _ := line["g"].(map[string]any)
	if line["@level"] != "warn" || line["@message"] != "disk almost full" || line["@timestamp"] == nil || line["k"] != "v" ||
		g["free"] != "1%" || g["host_log_error"] == nil {
		t.Errorf("stderr line %v: want hclog keys, the attributes and host_log_error", line)
	}
}

func TestConfigurationDefaultsToAnEmptyObject(t *testing.T) {
	var v struct{ A int }
	if err := (Configuration{}).Decode(&v); err != nil || string((Configuration{}).JSON()) != "{}" {
		t.Errorf("empty configuration: %v %q", err, (Configuration{}).JSON())
	}
	if err := (Configuration{raw: []byte(`{"a": "x"}`)}).Decode(&v); err == nil {
		t.Error("a string for an int decoded without an error")
	}
}
