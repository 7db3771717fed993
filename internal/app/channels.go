package app

import (
	"fmt"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/config"
)

// externalChannel builds a channel that talks to a real payment provider.
func externalChannel(name string, cfg config.Config, o Options) (channel.Channel, error) {
	return nil, fmt.Errorf("CHANNELS: channel %q is not available in this build", name)
}
