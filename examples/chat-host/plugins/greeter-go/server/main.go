// Command greeter-go is the chat example's Go plugin. It serves the chat
// server's own hook, chat.v1.MessageHooks/MessageWillBePosted, and calls the
// chat server's own API, chat.v1.ChatApi/GetUser, on the host API
// connection: each message's text gets its author's display name in front
// ("[Ada] hello"). A message from a user the chat server does not know is
// posted unchanged.
//
// Built by scripts/setup-go into server/dist/plugin-GOOS-GOARCH.
package main

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/plugvisor/plugvisor/examples/chat-host/gen/chatv1"
	"github.com/plugvisor/plugvisor/sdk/go/plugvisor"
)

type greeter struct {
	chatv1.UnimplementedMessageHooksServer
	host  *plugvisor.Host
	users chatv1.ChatApiClient
}

func (g *greeter) OnActivate(ctx context.Context, host *plugvisor.Host) error {
	if host.Conn() == nil {
		return errors.New("greeter-go needs the chat server's chat.v1.ChatApi on the host API connection, and this host offers no host API")
	}
	g.host = host
	g.users = chatv1.NewChatApiClient(host.Conn())
	host.Logger().InfoContext(ctx, "greeter-go activated")
	return nil
}

func (g *greeter) MessageWillBePosted(ctx context.Context, req *chatv1.MessageWillBePostedRequest) (*chatv1.MessageWillBePostedResponse, error) {
	m := req.GetMessage()
	if m == nil {
		return &chatv1.MessageWillBePostedResponse{}, nil
	}
	resp, err := g.users.GetUser(ctx, &chatv1.GetUserRequest{UserId: m.GetUserId()})
	if err != nil {
		// Keep the chat server's code; say what the plugin was doing.
		return nil, status.Errorf(status.Code(err), "greeter-go: looking up user %q: %s", m.GetUserId(), status.Convert(err).Message())
	}
	name := resp.GetUser().GetDisplayName()
	if !resp.GetFound() || name == "" {
		return &chatv1.MessageWillBePostedResponse{}, nil // posted unchanged
	}
	prefix := "[" + name + "] "
	if strings.HasPrefix(m.GetText(), prefix) {
		return &chatv1.MessageWillBePostedResponse{}, nil
	}
	return &chatv1.MessageWillBePostedResponse{Message: &chatv1.Message{
		Channel: m.GetChannel(),
		UserId:  m.GetUserId(),
		Text:    prefix + m.GetText(),
	}}, nil
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{Name: "greeter-go", Level: hclog.Info, Output: os.Stderr, JSONFormat: true})
	g := &greeter{}
	err := plugvisor.Serve(g,
		plugvisor.WithLogger(logger),
		plugvisor.WithGRPC(func(s *grpc.Server) { chatv1.RegisterMessageHooksServer(s, g) }))
	if err != nil {
		logger.Error("greeter-go could not serve", "error", err)
		os.Exit(1)
	}
}
