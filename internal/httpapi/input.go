package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// checkInput refuses what no handler can store before anything parses it:
// text PostgreSQL cannot hold (NUL, invalid UTF-8) in the path, the query or
// a JSON body, and a body that is not exactly one JSON value ("{..}{..}" was
// read as its first object). It reads the body itself, so a chunked body
// over the limit is a 413 here rather than a validation error later.
// Webhooks are left to their channel, which verifies the raw bytes.
func checkInput(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.HasPrefix(c.Path(), "/v1/webhooks/") {
			return next(c)
		}
		for _, v := range c.ParamValues() {
			if !validText(v) {
				return badText("a path parameter")
			}
		}
		for _, vs := range c.QueryParams() {
			for _, v := range vs {
				if !validText(v) {
					return badText("a query parameter")
				}
			}
		}
		req := c.Request()
		if req.Body == nil || req.Body == http.NoBody || req.Method == http.MethodGet || req.Method == http.MethodHead {
			return next(c) // a read's body means nothing and is never read
		}
		body, err := io.ReadAll(req.Body)
		var he *echo.HTTPError
		switch {
		case errors.As(err, &he):
			return he // the body limit's 413
		case err != nil:
			return echo.NewHTTPError(http.StatusBadRequest, "the request body could not be read")
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if mt, _, _ := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType)); len(body) == 0 || mt != echo.MIMEApplicationJSON {
			return next(c) // the validator answers a wrong media type (415)
		}
		switch {
		case !utf8.Valid(body):
			return badText("the body")
		case !json.Valid(body):
			return echo.NewHTTPError(http.StatusBadRequest, "the body must be exactly one JSON value")
		case bytes.Contains(body, []byte(`\u0000`)) && holdsNUL(body):
			return badText("the body")
		}
		return next(c)
	}
}

// holdsNUL reports a NUL in any string of a JSON value, key or value (the
// escape can also be the text of an escaped backslash followed by u0000).
func holdsNUL(body []byte) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.ContainsRune(v, 0)
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		case map[string]any:
			for k, x := range v {
				if strings.ContainsRune(k, 0) || walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// validText reports text PostgreSQL can store: valid UTF-8 without NUL.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func badText(where string) error {
	return echo.NewHTTPError(http.StatusBadRequest, where+" must be valid UTF-8 text without NUL characters")
}
