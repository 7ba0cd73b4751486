package client

import "github.com/grpcws/grpcws/internal/muxwire"

// WithMuxSettings sets what a multiplexed Conn accepts (its SETTINGS), so
// that tests can use small windows and frames.
func WithMuxSettings(s muxwire.Settings) Option {
	return optionFunc(func(cfg *config) { cfg.muxLocal = s })
}

// WithFirstStreamID sets the first stream id of each multiplexed socket,
// so that tests reach the last id.
func WithFirstStreamID(id uint32) Option {
	return optionFunc(func(cfg *config) { cfg.firstID = id })
}

// MuxDraining reports whether the next stream of a multiplexed Conn goes
// to a new socket: there is none, or the current one takes no new streams
// (GOAWAY, out of ids, failed).
func (c *Conn) MuxDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mux == nil || !c.mux.usable()
}
