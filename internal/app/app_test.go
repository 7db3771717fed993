package app_test

import (
	"context"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/config"
)

func newApp(h *apptest.Harness, cfg config.Config) (*app.App, error) {
	return app.New(context.Background(), cfg, app.Options{Pool: h.Pool})
}
