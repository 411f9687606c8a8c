package main

// greeter-go under go-plugin's own host playing the chat server's part: the
// host API connection carries a fake chat.v1.ChatApi beside plugvisor's
// services, and the test calls the plugin's chat.v1.MessageHooks.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/examples/chat-host/gen/chatv1"
	"github.com/plugvisor/plugvisor/sdk/go/plugvisortest"
	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "greeter-go-test-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "greeter-go")
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

// chatAPI is the chat server's user directory.
type chatAPI struct {
	chatv1.UnimplementedChatApiServer
	users map[string]string
}

func (c chatAPI) GetUser(_ context.Context, req *chatv1.GetUserRequest) (*chatv1.GetUserResponse, error) {
	if req.GetUserId() == "broken" {
		return nil, status.Error(codes.Unavailable, "the user directory is down")
	}
	name, ok := c.users[req.GetUserId()]
	if !ok {
		return &chatv1.GetUserResponse{}, nil
	}
	return &chatv1.GetUserResponse{Found: true, User: &chatv1.User{Id: req.GetUserId(), DisplayName: name}}, nil
}

func start(t *testing.T) *plugvisortest.Plugin {
	t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PLUGIN_UNIX_SOCKET_DIR="+plugvisortest.SocketDir(t))
	p, err := plugvisortest.Start(plugvisortest.Config{
		Cmd: cmd,
		Services: []func(*grpc.Server){func(s *grpc.Server) {
			chatv1.RegisterChatApiServer(s, chatAPI{users: map[string]string{"u1": "Ada"}})
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestGreeterPrefixesTheAuthorsDisplayName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := start(t)
	resp, err := p.Activate(ctx, "greeter-go", `{}`)
	if err != nil || resp.GetRefused() != nil {
		t.Fatalf("activation: %v %v", resp, err)
	}
	if !slices.Contains(p.Implemented().GetServices(), "chat.v1.MessageHooks") {
		t.Errorf("Implemented's services %q lack chat.v1.MessageHooks", p.Implemented().GetServices())
	}
	hooks := chatv1.NewMessageHooksClient(p.Conn)
	post := func(user, text string) (*chatv1.MessageWillBePostedResponse, error) {
		return hooks.MessageWillBePosted(ctx, &chatv1.MessageWillBePostedRequest{
			Message: &chatv1.Message{Channel: "town-square", UserId: user, Text: text},
		})
	}

	got, err := post("u1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if m := got.GetMessage(); m.GetText() != "[Ada] hello" || m.GetChannel() != "town-square" || m.GetUserId() != "u1" || got.GetRejection() != "" {
		t.Errorf("known user: %v, want text \"[Ada] hello\" in town-square from u1", got)
	}

	got, err = post("u2", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMessage() != nil || got.GetRejection() != "" {
		t.Errorf("unknown user: %v, want the message unchanged (no replacement, no rejection)", got)
	}

	_, err = post("broken", "hello")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a failing GetUser: %v, want the chat server's Unavailable passed on", err)
	}
}

func TestGreeterRefusesAHostWithoutTheHostAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := start(t)
	resp, err := p.Lifecycle.OnActivate(ctx, &plugvisorv1.OnActivateRequest{PluginId: "greeter-go", ConfigurationJson: "{}"})
	if err != nil {
		t.Fatal(err)
	}
	if msg := resp.GetRefused().GetMessage(); !strings.Contains(msg, "chat.v1.ChatApi") {
		t.Errorf("refusal %q: want one naming chat.v1.ChatApi, for a host without a host API", msg)
	}
}
