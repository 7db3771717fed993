package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/idempotency"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// problem is an RFC 9457 body. Extra members come from the domain error.
type problem struct {
	status int
	body   map[string]any
}

var kindStatus = map[fault.Kind]int{
	fault.Invalid:       http.StatusBadRequest,
	fault.Unauthorized:  http.StatusUnauthorized,
	fault.Forbidden:     http.StatusForbidden,
	fault.NotFound:      http.StatusNotFound,
	fault.Conflict:      http.StatusConflict,
	fault.Unprocessable: http.StatusUnprocessableEntity,
	fault.RateLimited:   http.StatusTooManyRequests,
	fault.Unavailable:   http.StatusServiceUnavailable,
}

// echo's own errors (routing, body limit, validation) by status.
var statusCode = map[int]string{
	http.StatusBadRequest:            "validation_failed",
	http.StatusUnauthorized:          "unauthenticated",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: "payload_too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusTooManyRequests:       "rate_limited",
	http.StatusServiceUnavailable:    "unavailable",
}

// problemFor is the one place errors become HTTP problems. Anything it does
// not recognise is a 500 whose detail says nothing of the cause.
func problemFor(err error) problem {
	var he *echo.HTTPError
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return newProblem(http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
	case errors.Is(err, idempotency.ErrInvalidKey):
		return newProblem(http.StatusBadRequest, "idempotency_key_invalid", "Idempotency-Key must be 1 to 255 printable ASCII characters")
	case errors.Is(err, idempotency.ErrKeyReused):
		return newProblem(http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
	case postgres.IsBadText(err):
		// checkInput refuses such text at the door; anything that still
		// reaches the database this way is the client's text too.
		return newProblem(http.StatusBadRequest, "validation_failed", "text must be valid UTF-8 without NUL characters")
	case errors.Is(err, idempotency.ErrInProgress):
		return newProblem(http.StatusConflict, "idempotency_key_in_progress", "a request with this Idempotency-Key is still running; retry later")
	case errors.As(err, &he):
		code := statusCode[he.Code]
		if code == "" {
			code = "internal_error"
		}
		detail := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && he.Code < 500 {
			detail = m
		}
		if he.Code >= 500 {
			return newProblem(http.StatusInternalServerError, "internal_error", "the server failed; the request may be retried")
		}
		return newProblem(he.Code, code, detail)
	}
	if fe, ok := fault.As(err); ok {
		status := kindStatus[fe.Kind]
		if status == 0 {
			status = http.StatusInternalServerError
		}
		p := newProblem(status, fe.Code, fe.Detail)
		for k, v := range fe.Extra {
			p.body[k] = v
		}
		return p
	}
	return newProblem(http.StatusInternalServerError, "internal_error", "the server failed; the request may be retried")
}

func newProblem(status int, code, detail string) problem {
	return problem{status: status, body: map[string]any{
		"type":   "https://diamondd.dev/problems/" + strings.ReplaceAll(code, "_", "-"),
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
		"code":   code,
	}}
}

// errorHandler writes every error as a problem; 5xx are logged with their cause.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := problemFor(err)
	if p.status >= 500 {
		s.log.ErrorContext(c.Request().Context(), "request failed", "method", c.Request().Method,
			"route", c.Path(), "request_id", requestID(c), "error", err)
	}
	if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok && p.status == http.StatusMethodNotAllowed {
		// The router knows; the validator's 405 does not say. Echo lists
		// OPTIONS for every path, but the API serves no OPTIONS (it answers 405
		// too), so the header names only what would be served.
		if allow = servedMethods(allow); allow != "" {
			c.Response().Header().Set(echo.HeaderAllow, allow)
		}
	}
	if p.status == http.StatusConflict && p.body["code"] == "idempotency_key_in_progress" {
		c.Response().Header().Set("Retry-After", "1")
	}
	if retry, ok := p.body["retry_after_seconds"]; ok {
		c.Response().Header().Set("Retry-After", jsonString(retry))
	}
	if err := writeProblem(c, p); err != nil {
		s.log.Error("write problem", "error", err)
	}
}

func writeProblem(c echo.Context, p problem) error {
	if c.Request().Method == http.MethodHead {
		return c.NoContent(p.status)
	}
	return p.write(c.Response())
}

// write sends the problem on w, whose headers already carry the request id.
func (p problem) write(w http.ResponseWriter) error {
	p.body["request_id"] = w.Header().Get(echo.HeaderXRequestID)
	b, err := json.Marshal(p.body)
	if err != nil {
		return err
	}
	w.Header().Set(echo.HeaderContentType, "application/problem+json")
	w.WriteHeader(p.status)
	_, err = w.Write(b)
	return err
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

// servedMethods is an Allow header without OPTIONS.
func servedMethods(allow string) string {
	var served []string
	for m := range strings.SplitSeq(allow, ",") {
		if m = strings.TrimSpace(m); m != "" && m != http.MethodOptions {
			served = append(served, m)
		}
	}
	return strings.Join(served, ", ")
}
