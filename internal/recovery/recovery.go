// Package recovery turns a panic in one item of a batch into that item's
// error, so that background work goes on with the rest: a row no one
// foresaw must not take the service down, nor stop the batch behind it.
// The worker loop finds these errors in a step's result, and logs and
// counts them as it does its own panics.
package recovery

import (
	"fmt"
	"runtime/debug"
)

// Panic is a recovered panic, with the stack where it happened.
type Panic struct {
	Value any
	Stack []byte
}

func (p *Panic) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

// Catch, deferred by a function with a named error result, turns a panic in
// it into a *Panic as that result.
func Catch(err *error) {
	if v := recover(); v != nil {
		*err = &Panic{Value: v, Stack: debug.Stack()}
	}
}

// Find returns every *Panic in err, which may join many (one per item).
func Find(err error) []*Panic {
	if p, ok := err.(*Panic); ok {
		return []*Panic{p}
	}
	var ps []*Panic
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		ps = Find(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			ps = append(ps, Find(e)...)
		}
	}
	return ps
}
