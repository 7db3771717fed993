// Package migrations holds the goose SQL migrations, embedded so that the
// binary and the tests migrate from the same files.
package migrations

import "embed"

// FS holds every migration, in goose's NNNN_name.sql naming.
//
//go:embed *.sql
var FS embed.FS
