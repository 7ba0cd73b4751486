package demo

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	Register(s)
	go s.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Stop()
	})
	return cc
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEcho(t *testing.T) {
	t.Parallel()
	echo := echov1.NewEchoServiceClient(dial(t))
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-echo-a", "1", "x-other", "2")
	var header, trailer metadata.MD
	res, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "m", ResponseSize: 10}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil || res.GetMessage() != "m" || len(res.GetPayload()) != 10 {
		t.Fatalf("Echo = %v, %v; want m and 10 bytes", res, err)
	}
	for _, md := range []metadata.MD{header, trailer} {
		if got := md.Get("x-echo-a"); !slices.Equal(got, []string{"1"}) || md.Get("x-other") != nil {
			t.Errorf("metadata %v; want x-echo-a only", md)
		}
	}
	_, err = echo.Echo(testContext(t), &echov1.EchoRequest{Fail: &echov1.Failure{Code: 99}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("fail code 99: %v; want INVALID_ARGUMENT", err)
	}
	short, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	_, err = echo.Echo(short, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("delay past the deadline: %v; want DEADLINE_EXCEEDED", err)
	}
}

func TestTickerUploadBidi(t *testing.T) {
	t.Parallel()
	echo := echov1.NewEchoServiceClient(dial(t))
	ctx := testContext(t)

	ticker, err := echo.Ticker(ctx, &echov1.TickerRequest{Message: "x", Count: 3, Fail: &echov1.Failure{Code: 9, Message: "done"}})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for {
		res, err := ticker.Recv()
		if err != nil {
			if status.Code(err) != codes.FailedPrecondition || n != 3 {
				t.Fatalf("after %d: %v; want 3 then FAILED_PRECONDITION", n, err)
			}
			break
		}
		n++
		if res.GetIndex() != n {
			t.Fatalf("index %d; want %d", res.GetIndex(), n)
		}
	}

	up, err := echo.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.Send(&echov1.UploadRequest{Chunk: []byte("abc")})
	up.Send(&echov1.UploadRequest{Chunk: []byte("de")})
	res, err := up.CloseAndRecv()
	if err != nil || res.GetMessages() != 2 || res.GetBytes() != 5 {
		t.Fatalf("Upload = %v, %v; want 2, 5", res, err)
	}

	bidi, err := echo.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bidi.Send(&echov1.BidiRequest{Message: "a"})
	if r, err := bidi.Recv(); err != nil || r.GetIndex() != 1 || r.GetMessage() != "a" {
		t.Fatalf("Bidi = %v, %v; want a, 1", r, err)
	}
	bidi.Send(&echov1.BidiRequest{Fail: &echov1.Failure{Code: 10, Message: "stop"}})
	if _, err := bidi.Recv(); status.Code(err) != codes.Aborted {
		t.Fatalf("Bidi fail: %v; want ABORTED", err)
	}
}

// join joins room as nick and returns the stream.
func join(t *testing.T, chat chatv1.ChatServiceClient, room, nick string) chatv1.ChatService_ChatClient {
	t.Helper()
	s, err := chat.Chat(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: room, Nickname: nick}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor receives until a response satisfies ok.
func waitFor(t *testing.T, s chatv1.ChatService_ChatClient, what string, ok func(*chatv1.ChatResponse) bool) {
	t.Helper()
	for {
		res, err := s.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(res) {
			return
		}
	}
}

func TestChat(t *testing.T) {
	t.Parallel()
	chat := chatv1.NewChatServiceClient(dial(t))
	ann := join(t, chat, "lobby", "ann")
	waitFor(t, ann, "ann's join", func(r *chatv1.ChatResponse) bool { return r.GetMessage().GetText() == "ann joined" })
	bob := join(t, chat, "lobby", " bob ")
	waitFor(t, ann, "the member list", func(r *chatv1.ChatResponse) bool {
		return slices.Equal(r.GetMembers().GetNicknames(), []string{"ann", "bob"})
	})
	bob.Send(&chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Say{Say: &chatv1.Say{Text: "hi ann"}}})
	waitFor(t, ann, "bob's message", func(r *chatv1.ChatResponse) bool {
		m := r.GetMessage()
		return m.GetNickname() == "bob" && m.GetText() == "hi ann" && !m.GetSystem() && m.GetTime() != nil
	})

	// Same nickname twice in a room.
	dup := join(t, chat, "lobby", "ann")
	if _, err := dup.Recv(); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate nickname: %v; want ALREADY_EXISTS", err)
	}
	// Another room does not hear the lobby.
	other := join(t, chat, "elsewhere", "cy")
	waitFor(t, other, "cy's members", func(r *chatv1.ChatResponse) bool {
		return slices.Equal(r.GetMembers().GetNicknames(), []string{"cy"})
	})

	// Leaving.
	bob.CloseSend()
	if _, err := recvUntilEnd(bob); err != nil {
		t.Errorf("bob's stream ended with %v; want OK", err)
	}
	waitFor(t, ann, "bob leaving", func(r *chatv1.ChatResponse) bool { return r.GetMessage().GetText() == "bob left" })
	ann.CloseSend()
	other.CloseSend()
	recvUntilEnd(ann)
	recvUntilEnd(other)
}

func recvUntilEnd(s chatv1.ChatService_ChatClient) (int, error) {
	for n := 0; ; n++ {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

func TestChatInvalid(t *testing.T) {
	t.Parallel()
	chat := chatv1.NewChatServiceClient(dial(t))
	tests := []struct {
		name  string
		first *chatv1.ChatRequest
		then  *chatv1.ChatRequest
	}{
		{"say first", &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Say{Say: &chatv1.Say{Text: "x"}}}, nil},
		{"empty nickname", &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r", Nickname: " "}}}, nil},
		{"long room", &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: strings.Repeat("r", 65), Nickname: "n"}}}, nil},
		{"join twice", &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r2", Nickname: "n"}}},
			&chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r2", Nickname: "n"}}}},
		{"long text", &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r3", Nickname: "n"}}},
			&chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Say{Say: &chatv1.Say{Text: strings.Repeat("é", 1001)}}}},
	}
	for _, tt := range tests {
		s, err := chat.Chat(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		s.Send(tt.first)
		if tt.then != nil {
			s.Send(tt.then)
		}
		if _, err := recvUntilEnd(s); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want INVALID_ARGUMENT", tt.name, err)
		}
	}
}

func TestChatSlowMember(t *testing.T) {
	t.Parallel()
	c := NewChatServer()
	slow := &member{out: make(chan *chatv1.ChatResponse, outbox), slow: make(chan struct{})}
	if err := c.join("r", "slow", slow); err != nil {
		t.Fatal(err)
	}
	for range outbox + 1 {
		c.broadcast("r", message("r", "x", "y", false))
	}
	select {
	case <-slow.slow:
	default:
		t.Fatal("a member whose outbox overflowed was not marked slow")
	}
}
