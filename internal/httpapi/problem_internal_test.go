package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Text the database refuses is the client's text: a 400 even when it got
// past checkInput (from anywhere else a request's text can come from).
func TestBadTextIsAClientError(t *testing.T) {
	for _, code := range []string{pgerrcode.CharacterNotInRepertoire, pgerrcode.UntranslatableCharacter} {
		err := fmt.Errorf("insert refund: %w", &pgconn.PgError{Code: code})
		if p := problemFor(err); p.status != http.StatusBadRequest || p.body["code"] != "validation_failed" {
			t.Errorf("%s: %d %v, want 400 validation_failed", code, p.status, p.body["code"])
		}
	}
	if p := problemFor(&pgconn.PgError{Code: pgerrcode.DiskFull}); p.status != http.StatusInternalServerError {
		t.Errorf("disk full: %d, want 500", p.status)
	}
}
