package demobackend

import (
	"errors"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
)

// Limits of the chat.
const (
	maxNickname = 32   // runes
	maxRoom     = 64   // runes
	maxText     = 1000 // runes
	outbox      = 64   // messages queued for one member before it is dropped
)

// ChatServer implements examples.chat.v1.ChatService: rooms made on demand,
// every message fanned out to every member of the room.
//
// Fan-out never waits for a member: each member has an outbox of 64
// messages, and a member whose outbox is full is dropped from the room at
// once (the others hear that it left). Its RPC ends with RESOURCE_EXHAUSTED
// as soon as its pending send returns, which is when the client reads or the
// RPC is cancelled.
//
// Make one with NewChatServer; it is safe for concurrent use.
type ChatServer struct {
	chatv1.UnimplementedChatServiceServer

	mu    sync.Mutex
	rooms map[string]map[string]*member // room -> nickname -> member
}

// member is one Chat RPC in a room.
type member struct {
	out     chan *chatv1.ChatResponse
	dropped chan struct{} // closed when the room dropped this member for being slow
}

func newMember() *member {
	return &member{out: make(chan *chatv1.ChatResponse, outbox), dropped: make(chan struct{})}
}

// NewChatServer returns a chat with no rooms.
func NewChatServer() *ChatServer {
	return &ChatServer{rooms: map[string]map[string]*member{}}
}

// Chat serves one member: the first message joins a room, the rest are
// said in it. The RPC's goroutine sends; one more goroutine receives. That
// one returns soon after the RPC does: gRPC cancels the stream when the
// handler returns, which ends a pending Recv.
func (c *ChatServer) Chat(stream grpc.BidiStreamingServer[chatv1.ChatRequest, chatv1.ChatResponse]) error {
	req, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "the first message must be a join: the stream ended before one")
	}
	if err != nil {
		return err
	}
	join := req.GetJoin()
	if join == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a join")
	}
	room, nick := strings.TrimSpace(join.GetRoom()), strings.TrimSpace(join.GetNickname())
	if n := utf8.RuneCountInString(nick); n < 1 || n > maxNickname {
		return status.Errorf(codes.InvalidArgument, "a nickname has 1 to %d characters", maxNickname)
	}
	if n := utf8.RuneCountInString(room); n < 1 || n > maxRoom {
		return status.Errorf(codes.InvalidArgument, "a room name has 1 to %d characters", maxRoom)
	}
	m := newMember()
	if err := c.join(room, nick, m); err != nil {
		return err
	}
	defer c.leave(room, nick, m)

	errc := make(chan error, 1)
	go func() {
		errc <- c.receive(stream, room, nick)
	}()
	ctx := stream.Context()
	tooSlow := status.Error(codes.ResourceExhausted, "too slow: messages arrived faster than this member took them")
	for {
		// A dropped member gets nothing more, even if its outbox holds some.
		select {
		case <-m.dropped:
			return tooSlow
		default:
		}
		select {
		case res := <-m.out:
			if err := stream.Send(res); err != nil {
				return err
			}
		case err := <-errc:
			return err
		case <-m.dropped:
			return tooSlow
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// receive handles what a member says until it half-closes or fails.
func (c *ChatServer) receive(stream grpc.BidiStreamingServer[chatv1.ChatRequest, chatv1.ChatResponse], room, nick string) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch k := req.GetKind().(type) {
		case *chatv1.ChatRequest_Say:
			text := strings.TrimSpace(k.Say.GetText())
			if text == "" {
				continue
			}
			if utf8.RuneCountInString(text) > maxText {
				return status.Errorf(codes.InvalidArgument, "a message has at most %d characters", maxText)
			}
			c.broadcast(room, message(room, nick, text, false))
		case *chatv1.ChatRequest_Join:
			return status.Error(codes.InvalidArgument, "already joined: join only once")
		default:
			return status.Error(codes.InvalidArgument, "empty request: set join or say")
		}
	}
}

// join adds m to room as nick and tells the room.
func (c *ChatServer) join(room, nick string, m *member) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	members := c.rooms[room]
	if members == nil {
		members = map[string]*member{}
		c.rooms[room] = members
	}
	if members[nick] != nil {
		return status.Errorf(codes.AlreadyExists, "%q is taken in this room", nick)
	}
	members[nick] = m
	c.broadcastLocked(room, message(room, nick, nick+" joined", true))
	c.broadcastLocked(room, c.membersLocked(room))
	return nil
}

// leave removes m from room, unless the room dropped it already.
func (c *ChatServer) leave(room, nick string, m *member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rooms[room][nick] != m {
		return
	}
	delete(c.rooms[room], nick)
	c.leftLocked(room, nick)
}

// leftLocked tells room that nick left, or removes the room if it is empty.
func (c *ChatServer) leftLocked(room, nick string) {
	if len(c.rooms[room]) == 0 {
		delete(c.rooms, room)
		return
	}
	c.broadcastLocked(room, message(room, nick, nick+" left", true))
	c.broadcastLocked(room, c.membersLocked(room))
}

func (c *ChatServer) broadcast(room string, res *chatv1.ChatResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broadcastLocked(room, res)
}

// broadcastLocked queues res for every member of room without waiting. A
// member whose outbox is full is dropped, and the rest are told.
func (c *ChatServer) broadcastLocked(room string, res *chatv1.ChatResponse) {
	var dropped []string
	for nick, m := range c.rooms[room] {
		select {
		case m.out <- res:
		default:
			close(m.dropped)
			delete(c.rooms[room], nick)
			dropped = append(dropped, nick)
		}
	}
	sort.Strings(dropped)
	for _, nick := range dropped {
		c.leftLocked(room, nick)
	}
}

func (c *ChatServer) membersLocked(room string) *chatv1.ChatResponse {
	nicks := make([]string, 0, len(c.rooms[room]))
	for n := range c.rooms[room] {
		nicks = append(nicks, n)
	}
	sort.Strings(nicks)
	return &chatv1.ChatResponse{Kind: &chatv1.ChatResponse_Members{Members: &chatv1.Members{Room: room, Nicknames: nicks}}}
}

func message(room, nick, text string, system bool) *chatv1.ChatResponse {
	return &chatv1.ChatResponse{Kind: &chatv1.ChatResponse_Message{Message: &chatv1.ChatMessage{
		Room: room, Nickname: nick, Text: text, Time: timestamppb.New(time.Now()), System: system,
	}}}
}
