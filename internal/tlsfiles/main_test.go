package tlsfiles

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Check the files on every handshake, so that tests see a change at
	// their next handshake without sleeping. TestCheckInterval puts the
	// interval back.
	checkInterval = 0
	goleak.VerifyTestMain(m)
}
