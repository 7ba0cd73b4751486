package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads the file at path and parses it with Parse, resolving ${NAME}
// from the process environment. Relative paths in the file are relative to
// the working directory, not to the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path, os.LookupEnv)
}

// Parse decodes the YAML document data over Default, expands ${NAME}
// references with lookupEnv and validates the result. name is the file's
// name in error messages ("grpcws.yaml:12: …"). On any problem it returns
// a nil Config and an Errors value with every problem found.
func Parse(data []byte, name string, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(data, name, lookupEnv, os.ReadFile)
}

// parse is Parse with the function that reads the files the configuration
// names, which tests replace.
func parse(data []byte, name string, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, Errors{syntaxError(name, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		e := &Error{File: name, Line: extra.Line, Problem: "a configuration file holds one YAML document"}
		if err != nil {
			e = syntaxError(name, err)
		}
		return nil, Errors{e}
	}

	cfg := Default()
	d := &decoder{lookupEnv: lookupEnv, nodes: map[string]nodeInfo{"": {line: 1}}, failedWithin: map[string]bool{}}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		d.nodes[""] = nodeInfo{line: root.Line}
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			// An empty document, e.g. only comments: the defaults.
		} else if root.Kind != yaml.MappingNode {
			d.errs = append(d.errs, &Error{Line: root.Line, Problem: "the document must be a mapping of keys such as listen:, backends: and routes:"})
		} else {
			d.decode(root, "", reflect.ValueOf(cfg).Elem())
		}
	}

	// A backend that did not decode may be one a route names.
	v := &validator{readFile: readFile, backendsUnknown: d.failed("backends")}
	v.config(cfg)
	for _, e := range v.errs {
		if d.failed(e.Field) {
			continue // a consequence of a problem already reported
		}
		e.Line = d.line(e.Field)
		if n, ok := d.nodes[e.Field]; ok && n.scalar && e.HasValue {
			e.Value = n.raw // as written: never an environment variable's value
		}
		d.errs = append(d.errs, e)
	}
	if len(d.errs) > 0 {
		for _, e := range d.errs {
			e.File = name
		}
		slices.SortStableFunc(d.errs, func(a, b *Error) int { return a.Line - b.Line })
		return nil, d.errs
	}
	return cfg, nil
}

// yamlLine finds the line in a yaml error message.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxError turns an error of the YAML parser into an Error, keeping the
// line the parser gave, if any.
func syntaxError(name string, err error) *Error {
	msg := err.Error()
	e := &Error{File: name}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
		// The parser leaves the line out when it is the first; only its
		// unknown-anchor error never has one.
		if !strings.HasPrefix(msg, "unknown anchor") {
			e.Line = 1
		}
	}
	e.Problem = "YAML syntax: " + msg
	return e
}

// A decoder fills a Config from a YAML node tree. It does the work of
// yaml.Node.Decode with KnownFields, but knows each value's path, so that
// every error names the key, and it expands ${NAME} in each scalar.
type decoder struct {
	lookupEnv func(string) (string, bool)
	errs      Errors
	nodes     map[string]nodeInfo // by path: where each key is
	// failedWithin holds the paths that hold a value with a problem.
	failedWithin map[string]bool
	// visited counts nodes, against documents that aliases make huge.
	// (Aliases cannot make decode loop: the types have no cycles.)
	visited int
}

type nodeInfo struct {
	line   int
	raw    string // a scalar's text as written
	scalar bool
	failed bool // a problem was reported here
}

// maxNodes bounds the nodes one document may expand to through aliases.
const maxNodes = 100_000

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// problem records a problem with node n, the value at path.
func (d *decoder) problem(path string, n *yaml.Node, withValue bool, msg string) {
	info := d.nodes[path]
	if info.line == 0 {
		info.line = n.Line
	}
	info.failed = true
	d.nodes[path] = info
	for p := range parents(path) {
		d.failedWithin[p] = true
	}
	e := &Error{Line: info.line, Field: path, Problem: msg}
	if withValue && n.Kind == yaml.ScalarNode {
		e.Value, e.HasValue = n.Value, true
	}
	d.errs = append(d.errs, e)
}

// failed reports whether a problem was reported at path, at a key within
// it, or at a key that holds it.
func (d *decoder) failed(path string) bool {
	if d.failedWithin[path] {
		return true
	}
	for p := range parents(path) {
		if d.nodes[p].failed {
			return true
		}
	}
	return false
}

// parents yields path and the paths of the keys that hold it, innermost
// first, ending with "", the document.
func parents(path string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for {
			if !yield(path) || path == "" {
				return
			}
			i := strings.LastIndexAny(path, ".[")
			if i < 0 {
				i = 0
			}
			path = path[:i]
		}
	}
}

// line returns the line of path, or of the nearest key that holds it.
func (d *decoder) line(path string) int {
	for p := range parents(path) {
		if n := d.nodes[p]; n.line > 0 {
			return n.line
		}
	}
	return 0
}

// decode decodes n, the value at path, into v.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	d.visited++
	if d.visited > maxNodes {
		if d.visited == maxNodes+1 {
			d.problem(path, n, false, "the document is too large (too many aliases?)")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, path, v)
		return
	}
	info := d.nodes[path] // a key's line, if the caller knows it
	if info.line == 0 {
		info.line = n.Line
	}
	if n.Kind == yaml.ScalarNode {
		info.raw, info.scalar = n.Value, true
	}
	d.nodes[path] = info
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" or "key: null" keeps the default
	}

	t := v.Type()
	switch {
	case t == durationType:
		if s, ok := d.scalar(n, path, "a duration"); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.problem(path, n, true, `must be a duration with a unit, such as "30s", "5m" or "1h30m"`)
				return
			}
			v.SetInt(int64(dur))
		}
	case t == byteSizeType:
		if s, ok := d.scalar(n, path, "a size"); ok {
			b, err := ParseByteSize(s)
			if err != nil {
				d.problem(path, n, true, err.Error())
				return
			}
			v.SetInt(int64(b))
		}
	case t.Kind() == reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case t.Kind() == reflect.Bool:
		if s, ok := d.scalar(n, path, "true or false"); ok {
			switch strings.ToLower(s) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.problem(path, n, true, "must be true or false")
			}
		}
	case t.Kind() == reflect.Int:
		if s, ok := d.scalar(n, path, "a whole number"); ok {
			i, err := strconv.ParseInt(s, 10, strconv.IntSize)
			if err != nil {
				msg := "must be a whole number"
				if errors.Is(err, strconv.ErrRange) {
					msg = "is too large"
				}
				d.problem(path, n, true, msg)
				return
			}
			v.SetInt(i)
		}
	case t.Kind() == reflect.Pointer:
		elem := reflect.New(t.Elem())
		if !v.IsNil() {
			elem.Elem().Set(v.Elem())
		} else {
			elem.Elem().Set(defaultFor(t.Elem()))
		}
		d.decode(n, path, elem.Elem())
		v.Set(elem)
	case t.Kind() == reflect.Struct:
		d.mapping(n, path, v)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, n, true, "must be a list")
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			s.Index(i).Set(defaultFor(t.Elem()))
			d.decode(c, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
		}
		v.Set(s)
	case t.Kind() == reflect.Map: // map[string]string
		if n.Kind != yaml.MappingNode {
			d.problem(path, n, true, "must be a mapping")
			return
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		d.pairs(n, path, mapKey, func(key, kp string, _, vn *yaml.Node) {
			val := reflect.New(t.Elem()).Elem()
			d.decode(vn, kp, val)
			m.SetMapIndex(reflect.ValueOf(key), val)
		})
		v.Set(m)
	default:
		panic("config: no decoding for " + t.String())
	}
}

// mapping decodes a mapping node into the struct v.
func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	t := v.Type()
	if n.Kind != yaml.MappingNode {
		d.problem(path, n, true, "must be a mapping with the keys "+strings.Join(keys(t), ", "))
		return
	}
	d.pairs(n, path, join, func(key, kp string, kn, vn *yaml.Node) {
		i := fieldIndex(t, key)
		if i < 0 {
			d.errs = append(d.errs, &Error{Line: kn.Line, Field: kp, Problem: "unknown key; the keys here are " + strings.Join(keys(t), ", ")})
			return
		}
		d.decode(vn, kp, v.Field(i))
	})
}

// pairs calls f for each key and value of the mapping n at path, with the
// key's path made by keyPath. It reports keys that are not strings,
// repeated keys and merge keys.
func (d *decoder) pairs(n *yaml.Node, path string, keyPath func(path, key string) string, f func(key, kp string, kn, vn *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind == yaml.AliasNode {
			kn = kn.Alias
		}
		if kn.Kind != yaml.ScalarNode {
			d.errs = append(d.errs, &Error{Line: kn.Line, Field: path, Problem: "keys must be strings"})
			continue
		}
		kp := keyPath(path, kn.Value)
		switch first, repeated := seen[kn.Value]; {
		case kn.Tag == "!!merge":
			d.errs = append(d.errs, &Error{Line: kn.Line, Field: kp, Problem: "merge keys are not supported; repeat the keys"})
		case repeated:
			d.errs = append(d.errs, &Error{Line: kn.Line, Field: kp, Problem: fmt.Sprintf("key repeated; first on line %d", first)})
		default:
			seen[kn.Value] = kn.Line
			d.nodes[kp] = nodeInfo{line: kn.Line}
			f(kn.Value, kp, kn, vn)
		}
	}
}

// scalar returns the text of the scalar n with ${NAME} expanded. what
// describes the expected value, for the error when n is not a scalar.
func (d *decoder) scalar(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		kind := "a list"
		if n.Kind == yaml.MappingNode {
			kind = "a mapping"
		}
		d.problem(path, n, false, "must be "+what+", not "+kind)
		return "", false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
	default:
		d.problem(path, n, true, "must be "+what+", not "+n.Tag)
		return "", false
	}
	s, err := expand(n.Value, d.lookupEnv)
	if err != nil {
		d.problem(path, n, true, err.Error())
		return "", false
	}
	return s, true
}

// envName is what may go between ${ and }.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces each ${NAME} in s with the variable's value and each $$
// with $. Any other $ is an error, as is an unset variable. Errors name
// the variable, never a value.
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$$"):
			b.WriteByte('$')
			s = s[2:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", errors.New(`"${" without a closing "}"; write $$ for a dollar sign`)
			}
			name := s[2:end]
			if !envName.MatchString(name) {
				return "", fmt.Errorf(`%q is not a variable name; write ${NAME} with letters, digits and _, or $$ for a dollar sign`, name)
			}
			val, ok := lookupEnv(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(val)
			s = s[end+1:]
		default:
			return "", errors.New(`"$" must start ${NAME}; write $$ for a dollar sign`)
		}
	}
}

// defaultFor returns the value a new element of type t starts from.
func defaultFor(t reflect.Type) reflect.Value {
	switch t {
	case reflect.TypeFor[Backend]():
		return reflect.ValueOf(NewBackend("", ""))
	case reflect.TypeFor[ListenTLS]():
		return reflect.ValueOf(ListenTLS{MinVersion: "1.2"})
	}
	return reflect.Zero(t)
}

// fieldIndex returns the index of the field of struct t whose yaml name is
// key, or -1.
func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == key {
			return i
		}
	}
	return -1
}

// keys returns the yaml names of the fields of struct t.
func keys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// mapKey appends a key of a map to a path: aliases["pkg.Svc/Method"].
func mapKey(path, key string) string {
	return path + "[" + strconv.Quote(key) + "]"
}

// join appends a key to a path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
