// Package fault is the domain error type: a kind that decides the HTTP
// status, a stable snake_case code clients switch on, and a human detail.
// Domain packages return them; httpapi maps them to problems in one place.
package fault

import (
	"errors"
	"fmt"
)

// Kind is the class of a domain error.
type Kind int

const (
	Invalid       Kind = iota + 1 // 400: the request is wrong
	Unauthorized                  // 401
	Forbidden                     // 403
	NotFound                      // 404
	Conflict                      // 409: the object's state does not allow it
	Unprocessable                 // 422: understood, but refused by a rule
	RateLimited                   // 429
	Unavailable                   // 503: try again later
)

// Error is a domain error.
type Error struct {
	Kind   Kind
	Code   string
	Detail string
	// Extra members for the problem body (e.g. max_refundable_fen, reason_code).
	Extra map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// New makes a domain error.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// With adds a member to the problem body.
func (e *Error) With(key string, value any) *Error {
	if e.Extra == nil {
		e.Extra = map[string]any{}
	}
	e.Extra[key] = value
	return e
}

// As finds the domain error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Is reports whether err carries a domain error with the given code.
func Is(err error, code string) bool {
	e, ok := As(err)
	return ok && e.Code == code
}
