// Package oapi is generated from openapi/openapi.yaml: the echo server
// interface, the strict handler adapter, the types and the embedded spec.
// Edit the spec, then `go generate ./internal/httpapi/oapi`.
package oapi

//go:generate go tool oapi-codegen -config cfg.yaml -o oapi.gen.go ../../../openapi/openapi.yaml
