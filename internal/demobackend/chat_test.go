package demobackend

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
)

// chatClient serves a new ChatServer and returns it with a client for it.
func chatClient(t *testing.T) (*ChatServer, chatv1.ChatServiceClient, *grpc.ClientConn) {
	t.Helper()
	srv := NewChatServer()
	cc := serve(t, func(s *grpc.Server) { chatv1.RegisterChatServiceServer(s, srv) })
	return srv, chatv1.NewChatServiceClient(cc), cc
}

func joinRequest(room, nick string) *chatv1.ChatRequest {
	return &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: room, Nickname: nick}}}
}

func sayRequest(text string) *chatv1.ChatRequest {
	return &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Say{Say: &chatv1.Say{Text: text}}}
}

// join opens a Chat stream in ctx and joins room as nick.
func join(t *testing.T, ctx context.Context, chat chatv1.ChatServiceClient, room, nick string) chatv1.ChatService_ChatClient {
	t.Helper()
	s, err := chat.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(joinRequest(room, nick)); err != nil {
		t.Fatal(err)
	}
	return s
}

// expectSystem receives a system message with text, then the member list.
func expectSystem(t *testing.T, s chatv1.ChatService_ChatClient, who, room, text string, members ...string) {
	t.Helper()
	res, err := s.Recv()
	if err != nil {
		t.Fatalf("%s waiting for %q: %v", who, text, err)
	}
	if m := res.GetMessage(); m.GetText() != text || !m.GetSystem() || m.GetRoom() != room || m.GetTime() == nil {
		t.Fatalf("%s got %v; want the system message %q in %s", who, res, text, room)
	}
	expectMembers(t, s, who, room, members...)
}

func expectMembers(t *testing.T, s chatv1.ChatService_ChatClient, who, room string, members ...string) {
	t.Helper()
	res, err := s.Recv()
	if err != nil {
		t.Fatalf("%s waiting for the members %v: %v", who, members, err)
	}
	if m := res.GetMembers(); m.GetRoom() != room || !slices.Equal(m.GetNicknames(), members) {
		t.Fatalf("%s got %v; want the members %v of %s", who, res, members, room)
	}
}

// expectSay receives what nick said.
func expectSay(t *testing.T, s chatv1.ChatService_ChatClient, who, room, nick, text string, before time.Time) {
	t.Helper()
	res, err := s.Recv()
	if err != nil {
		t.Fatalf("%s waiting for %q: %v", who, text, err)
	}
	m := res.GetMessage()
	if m.GetNickname() != nick || m.GetText() != text || m.GetRoom() != room || m.GetSystem() {
		t.Fatalf("%s got %v; want %s saying %q in %s", who, res, nick, text, room)
	}
	if at := m.GetTime().AsTime(); at.Before(before.Truncate(time.Microsecond)) || at.After(time.Now()) {
		t.Errorf("%s: message time %v; want the server's time, after %v", who, at, before)
	}
}

// expectEnd receives until the stream ends and returns its status, nil for OK.
func expectEnd(s chatv1.ChatService_ChatClient) error {
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func roomCount(c *ChatServer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rooms)
}

func TestChat(t *testing.T) {
	t.Parallel()
	srv, chat, _ := chatClient(t)
	ctx := testContext(t)

	ann := join(t, ctx, chat, "lobby", "ann")
	expectSystem(t, ann, "ann", "lobby", "ann joined", "ann")

	bob := join(t, ctx, chat, " lobby ", " bob ") // spaces are trimmed
	expectSystem(t, ann, "ann", "lobby", "bob joined", "ann", "bob")
	expectSystem(t, bob, "bob", "lobby", "bob joined", "ann", "bob")

	before := time.Now()
	if err := bob.Send(sayRequest("hi ann")); err != nil {
		t.Fatal(err)
	}
	expectSay(t, ann, "ann", "lobby", "bob", "hi ann", before)
	expectSay(t, bob, "bob", "lobby", "bob", "hi ann", before)

	before = time.Now()
	if err := ann.Send(sayRequest("hi bob")); err != nil {
		t.Fatal(err)
	}
	expectSay(t, bob, "bob", "lobby", "ann", "hi bob", before)
	expectSay(t, ann, "ann", "lobby", "ann", "hi bob", before)

	// Bob half-closes: his RPC ends with OK and ann sees him go.
	_ = bob.CloseSend()
	if err := expectEnd(bob); err != nil {
		t.Errorf("bob's stream ended with %v; want OK", err)
	}
	expectSystem(t, ann, "ann", "lobby", "bob left", "ann")

	// The last member leaving removes the room.
	_ = ann.CloseSend()
	if err := expectEnd(ann); err != nil {
		t.Errorf("ann's stream ended with %v; want OK", err)
	}
	if n := roomCount(srv); n != 0 {
		t.Errorf("%d rooms after everyone left; want 0", n)
	}
}

func TestChatRooms(t *testing.T) {
	t.Parallel()
	srv, chat, _ := chatClient(t)
	ctx := testContext(t)

	ann := join(t, ctx, chat, "lobby", "ann")
	expectSystem(t, ann, "ann", "lobby", "ann joined", "ann")

	// The same nickname twice in a room is refused, in another room not.
	if err := expectEnd(join(t, ctx, chat, "lobby", " ann")); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate nickname: %v; want ALREADY_EXISTS", err)
	}
	other := join(t, ctx, chat, "elsewhere", "ann")
	expectSystem(t, other, "ann elsewhere", "elsewhere", "ann joined", "ann")
	if n := roomCount(srv); n != 2 {
		t.Errorf("%d rooms; want 2", n)
	}

	// One room does not hear the other.
	before := time.Now()
	_ = other.Send(sayRequest("only here"))
	expectSay(t, other, "ann elsewhere", "elsewhere", "ann", "only here", before)
	_ = ann.Send(sayRequest("in the lobby"))
	expectSay(t, ann, "ann", "lobby", "ann", "in the lobby", before)

	// A cancelled member leaves too, and its nickname is free again.
	cctx, cancel := context.WithCancel(ctx)
	cy := join(t, cctx, chat, "lobby", "cy")
	expectSystem(t, cy, "cy", "lobby", "cy joined", "ann", "cy")
	expectSystem(t, ann, "ann", "lobby", "cy joined", "ann", "cy")
	cancel()
	expectSystem(t, ann, "ann", "lobby", "cy left", "ann")
	cy = join(t, ctx, chat, "lobby", "cy")
	expectSystem(t, ann, "ann", "lobby", "cy joined", "ann", "cy")

	for _, s := range []chatv1.ChatService_ChatClient{ann, other, cy} {
		_ = s.CloseSend()
		if err := expectEnd(s); err != nil {
			t.Errorf("leaving: %v; want OK", err)
		}
	}
	if n := roomCount(srv); n != 0 {
		t.Errorf("%d rooms after everyone left; want 0", n)
	}
}

func TestChatLimits(t *testing.T) {
	t.Parallel()
	_, chat, _ := chatClient(t)
	ctx := testContext(t)
	nick, room, text := strings.Repeat("é", maxNickname), strings.Repeat("ü", maxRoom), strings.Repeat("ß", maxText)
	s := join(t, ctx, chat, room, nick)
	expectSystem(t, s, "member", room, nick+" joined", nick)
	before := time.Now()
	_ = s.Send(sayRequest(text))
	expectSay(t, s, "member", room, nick, text, before)
	_ = s.CloseSend()
	if err := expectEnd(s); err != nil {
		t.Errorf("leaving: %v; want OK", err)
	}
}

func TestChatInvalid(t *testing.T) {
	t.Parallel()
	_, chat, _ := chatClient(t)
	tests := []struct {
		name     string
		requests []*chatv1.ChatRequest
	}{
		{"nothing", nil},
		{"say first", []*chatv1.ChatRequest{sayRequest("x")}},
		{"empty first", []*chatv1.ChatRequest{{}}},
		{"empty nickname", []*chatv1.ChatRequest{joinRequest("r", " ")}},
		{"long nickname", []*chatv1.ChatRequest{joinRequest("r", strings.Repeat("n", maxNickname+1))}},
		{"empty room", []*chatv1.ChatRequest{joinRequest("", "n")}},
		{"long room", []*chatv1.ChatRequest{joinRequest(strings.Repeat("r", maxRoom+1), "n")}},
		{"join twice", []*chatv1.ChatRequest{joinRequest("r2", "n"), joinRequest("r2", "m")}},
		{"empty request after join", []*chatv1.ChatRequest{joinRequest("r3", "n"), {}}},
		{"long text", []*chatv1.ChatRequest{joinRequest("r4", "n"), sayRequest(strings.Repeat("é", maxText+1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := chat.Chat(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, req := range tt.requests {
				_ = s.Send(req)
			}
			_ = s.CloseSend()
			if err := expectEnd(s); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%v; want INVALID_ARGUMENT", err)
			}
		})
	}
}

// TestChatSlowMember checks that a member who stops reading is dropped with
// RESOURCE_EXHAUSTED while the room goes on.
func TestChatSlowMember(t *testing.T) {
	t.Parallel()
	_, chat, cc := chatClient(t)
	ctx := testContext(t)

	// A fixed 64 KiB flow-control window, so that the slow member's transport
	// stops taking messages early.
	slowConn, err := grpc.NewClient(cc.Target(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	slow := join(t, ctx, chatv1.NewChatServiceClient(slowConn), "r", "slow")
	expectSystem(t, slow, "slow", "r", "slow joined", "slow")

	fast := join(t, ctx, chat, "r", "fast")
	expectSystem(t, fast, "fast", "r", "fast joined", "fast", "slow")

	// Fast says one long message at a time and reads it back, so that fast
	// keeps up, until the room reports that slow left.
	text := strings.Repeat("x", maxText)
	dropped := false
	for i := 0; i < 2000 && !dropped; i++ {
		if err := fast.Send(sayRequest(text)); err != nil {
			t.Fatal(err)
		}
		for {
			res, err := fast.Recv()
			if err != nil {
				t.Fatalf("fast: %v", err)
			}
			if res.GetMessage().GetText() == "slow left" {
				dropped = true
				expectMembers(t, fast, "fast", "r", "fast")
			}
			if res.GetMessage().GetText() == text {
				break
			}
		}
	}
	if !dropped {
		t.Fatal("slow was never dropped")
	}
	if err := expectEnd(slow); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("slow's stream ended with %v; want RESOURCE_EXHAUSTED", err)
	}
	_ = fast.CloseSend()
	if err := expectEnd(fast); err != nil {
		t.Errorf("fast's stream ended with %v; want OK", err)
	}
}
