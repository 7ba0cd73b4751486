package config

import (
	"strconv"
	"strings"
)

// An Error is one problem with a configuration. Its text is
//
//	<file>:<line>: <field>: <value>: <problem>
//
// for example
//
//	grpcws.yaml:14: backends[0].target: "": must not be empty
//
// The "<file>:<line>: " prefix is left out when the configuration was not
// read from a file (Validate on a Config built in code). ": <value>" is left
// out when the problem is not about one value (a combination of keys, a
// missing list). The value is quoted with Go's %q rules and is the text as
// written in the file: a value that came from an environment variable is
// shown as its ${NAME} reference, never expanded.
type Error struct {
	File     string // the name given to Parse; "" for Validate
	Line     int    // 1-based; 0 when unknown
	Field    string // the key's path, e.g. "backends[0].tls.cert_file"; "" for a YAML syntax error
	Value    string // the offending value, when HasValue
	HasValue bool
	Problem  string // what is wrong, e.g. "must not be empty"
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	if e.HasValue {
		b.WriteString(strconv.Quote(e.Value))
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

// Errors is every problem found in one configuration, in the order of the
// lines they are on. Its text is one Error a line. Parse, Load and
// Validate return an Errors value, never an empty one.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the errors, for errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// problems collects Errors.
type problems struct {
	errs Errors
}

// bad records a problem with the value at field.
func (p *problems) bad(field, value, problem string) {
	p.errs = append(p.errs, &Error{Field: field, Value: value, HasValue: true, Problem: problem})
}

// fail records a problem with field as a whole.
func (p *problems) fail(field, problem string) {
	p.errs = append(p.errs, &Error{Field: field, Problem: problem})
}

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	return p.errs
}
