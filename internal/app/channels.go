package app

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/config"
)

// externalChannel builds a channel that talks to a real payment provider
// from its settings; a missing or bad setting stops the start with a
// message naming the variable.
func externalChannel(name string, cfg config.Config, o Options) (channel.Channel, error) {
	client := &http.Client{Timeout: cfg.ChannelTimeout}
	switch name {
	case "alipay":
		c, err := alipay.LoadConfig(cfg.Env)
		if err != nil {
			return nil, fmt.Errorf("alipay channel: %w", err)
		}
		if c.NotifyURL, err = notifyURL(cfg, name, c.NotifyURL, alipay.EnvNotifyURL); err != nil {
			return nil, err
		}
		c.HTTPClient, c.Timeout, c.Now = client, cfg.ChannelTimeout, o.Now
		ch, err := alipay.New(c)
		if err != nil {
			return nil, fmt.Errorf("alipay channel: %w", err)
		}
		return ch, nil
	case "wechatpay":
		c, err := wechatpay.LoadConfig(cfg.Env)
		if err != nil {
			return nil, fmt.Errorf("wechatpay channel: %w", err)
		}
		if c.NotifyURL, err = notifyURL(cfg, name, c.NotifyURL, wechatpay.EnvNotifyURL); err != nil {
			return nil, err
		}
		c.HTTPClient, c.Timeout, c.Now = client, cfg.ChannelTimeout, o.Now
		ch, err := wechatpay.New(c)
		if err != nil {
			return nil, fmt.Errorf("wechatpay channel: %w", err)
		}
		return ch, nil
	}
	return nil, fmt.Errorf("CHANNELS: unknown channel %q", name)
}

func notifyURL(cfg config.Config, name, explicit, envName string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if cfg.PublicBaseURL == "" {
		return "", fmt.Errorf("%s channel: %s or PUBLIC_BASE_URL is required (where the channel sends its notifications)", name, envName)
	}
	return strings.TrimRight(cfg.PublicBaseURL, "/") + "/v1/webhooks/" + name, nil
}
