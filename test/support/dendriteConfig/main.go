// Command dendrite-config reads a dendrite.yaml the way the Dendrite v0.13.8 monolith does and prints
// what that version makes of it, as JSON, for test/dendriteCompat.real.test.ts:
//
//	dendrite-config -config dendrite.yaml [-key matrix_key.pem]
//
// loadError / verifyErrors: setup/config loadConfig (what config.Load runs: Defaults, yaml.v2
// Unmarshal, check, the private key, Derive) and then Verify, exactly as cmd/dendrite/main.go does
// before it starts. -key stands in for the file global.private_key names (a Swarm secret in the
// deployment), so the signing key is judged by the same PEM reader.
//
// unknownKeys: every mapping key of the file no yaml tag of v0.13.8's config structs takes, by
// yaml.v2 UnmarshalStrict (the decoder Dendrite uses, made strict), each placed at its full path by
// a walk of the file against the same structs; the two must agree ("problems" otherwise).
//
// values: every scalar (and empty list) of the file with the value the loaded config holds at its
// path, and whether that equals the file's text decoded alone into the field's type: a key v0.13.8
// parses but then replaces (global.key_id: loadConfig takes the PEM's Key-ID) shows as same=false.
// yaml.v3 refuses a duplicate key (a problem), where yaml.v2 would keep the last.
//
// facts: behaviour of v0.13.8 that a key's meaning depends on, read from the linked code itself.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "unsafe" // go:linkname

	"github.com/matrix-org/dendrite/setup/config"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	yaml2 "gopkg.in/yaml.v2"
	yaml3 "gopkg.in/yaml.v3"
)

// The function config.Load calls after reading the file and the working directory
// (setup/config/config.go at v0.13.8); called directly so the key file can be redirected.
//
//go:linkname loadConfig github.com/matrix-org/dendrite/setup/config.loadConfig
func loadConfig(basePath string, configData []byte, readFile func(string) ([]byte, error)) (*config.Dendrite, error)

const dendriteModule = "github.com/matrix-org/dendrite"

type value struct {
	Path      string `json:"path"`
	Line      int    `json:"line"`
	GoType    string `json:"goType"`
	Written   any    `json:"written"`
	Effective any    `json:"effective"`
	Same      bool   `json:"same"`
}

type report struct {
	Dendrite     string         `json:"dendrite"`
	LoadError    *string        `json:"loadError"`
	VerifyErrors []string       `json:"verifyErrors"`
	StrictErrors []string       `json:"strictErrors"`
	UnknownKeys  []string       `json:"unknownKeys"`
	Values       []value        `json:"values"`
	Facts        map[string]any `json:"facts"`
	Problems     []string       `json:"problems"`
}

type unknown struct {
	path string
	key  string
	line int
}

type walker struct {
	unknown  []unknown
	values   []value
	problems []string
}

func main() {
	configPath := flag.String("config", "", "dendrite.yaml to read")
	keyPath := flag.String("key", "", "file to read in place of global.private_key (default: that path itself)")
	flag.Parse()
	if *configPath == "" {
		fmt.Fprintln(os.Stderr, "usage: dendrite-config -config FILE [-key FILE]")
		os.Exit(2)
	}
	data, err := os.ReadFile(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := run(data, *keyPath)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(data []byte, keyPath string) report {
	r := report{VerifyErrors: []string{}, StrictErrors: []string{}, UnknownKeys: []string{}, Values: []value{}, Problems: []string{}, Facts: map[string]any{}}
	r.Dendrite = moduleVersion(dendriteModule)

	// As config.Load: the working directory is the base of relative paths.
	basePath, err := filepath.Abs(".")
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r
	}
	readFile := os.ReadFile
	if keyPath != "" {
		var head struct {
			Global struct {
				PrivateKey string `yaml:"private_key"`
			} `yaml:"global"`
		}
		_ = yaml2.Unmarshal(data, &head)
		want := absPath(basePath, head.Global.PrivateKey)
		readFile = func(p string) ([]byte, error) {
			if p == want {
				return os.ReadFile(keyPath)
			}
			return os.ReadFile(p)
		}
	}
	cfg, err := loadConfig(basePath, data, readFile)
	if err != nil {
		msg := err.Error()
		r.LoadError = &msg
		// Still walk the file: a config the loader refuses can have unknown keys too.
		cfg = &config.Dendrite{}
		cfg.Defaults(config.DefaultOpts{Generate: false, SingleDatabase: true})
		_ = yaml2.Unmarshal(data, cfg)
	} else {
		var errs config.ConfigErrors
		cfg.Verify(&errs)
		r.VerifyErrors = append(r.VerifyErrors, errs...)
	}

	// yaml.v2 strict: the same decoder and structs, refusing fields no tag takes.
	strict := &config.Dendrite{}
	strict.Defaults(config.DefaultOpts{Generate: false, SingleDatabase: true})
	if err := yaml2.UnmarshalStrict(data, strict); err != nil {
		if te, ok := err.(*yaml2.TypeError); ok {
			r.StrictErrors = append(r.StrictErrors, te.Errors...)
		} else {
			r.StrictErrors = append(r.StrictErrors, err.Error())
		}
	}

	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil {
		r.Problems = append(r.Problems, "yaml.v3: "+err.Error())
		return r
	}
	w := &walker{}
	if len(doc.Content) == 1 {
		w.walk(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	r.Values = append(r.Values, w.values...)
	r.Problems = append(r.Problems, w.problems...)
	for _, u := range w.unknown {
		r.UnknownKeys = append(r.UnknownKeys, u.path)
	}
	sort.Strings(r.UnknownKeys)
	r.Problems = append(r.Problems, crossCheck(r.StrictErrors, w.unknown)...)

	// v0.13.8's DNS cache dialer takes no allow/deny networks (gomatrixserverlib fclient
	// NewDNSCache(size, lifetime)); in v0.15.2 it takes both and filters the dial.
	r.Facts["dnsCacheFiltersNetworks"] = reflect.TypeOf(fclient.NewDNSCache).NumIn() > 2
	return r
}

var notFound = regexp.MustCompile(`^line (\d+): field (.+) not found in type (.+)$`)

// Every "field not found" of the strict decoder must be one key the walk found unknown (same line
// and name), and the other way round: the walk's paths are only trusted when both agree.
func crossCheck(strictErrors []string, found []unknown) []string {
	var problems []string
	seen := map[string]bool{}
	for _, e := range strictErrors {
		m := notFound.FindStringSubmatch(e)
		if m == nil {
			continue // a type error: the non-strict load reports it too
		}
		line, _ := strconv.Atoi(m[1])
		ok := false
		for _, u := range found {
			if u.line == line && u.key == m[2] {
				ok = true
				seen[u.path] = true
			}
		}
		if !ok {
			problems = append(problems, "strict decoder reports a field the walk did not find: "+e)
		}
	}
	for _, u := range found {
		if !seen[u.path] {
			problems = append(problems, fmt.Sprintf("the walk found %s (line %d) unknown but the strict decoder did not", u.path, u.line))
		}
	}
	return problems
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the keys yaml.v2 decodes into a struct to their field indexes: the tag's name,
// else the lower-cased field name; ",inline" structs contribute their keys; "-" and unexported
// fields take none (gopkg.in/yaml.v2 yaml.go getStructInfo).
func yamlFields(t reflect.Type) map[string][]int {
	fields := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "" && !strings.Contains(string(f.Tag), ":") {
			tag = string(f.Tag)
		}
		if tag == "-" {
			continue
		}
		parts := strings.Split(tag, ",")
		inline := false
		for _, flag := range parts[1:] {
			if flag == "inline" {
				inline = true
			}
		}
		if inline {
			ft := f.Type
			if ft.Kind() == reflect.Ptr {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, idx := range yamlFields(ft) {
					fields[k] = append([]int{i}, idx...)
				}
			}
			continue
		}
		if f.PkgPath != "" {
			continue
		}
		name := parts[0]
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = []int{i}
	}
	return fields
}

func (w *walker) walk(n *yaml3.Node, v reflect.Value, path string) {
	for v.IsValid() && v.Kind() == reflect.Ptr {
		if v.IsNil() {
			v = reflect.Value{}
			break
		}
		v = v.Elem()
	}
	if v.IsValid() && v.Kind() == reflect.Interface {
		// Free-form values (e.g. logging[].params): compared whole.
		w.leaf(n, v, path)
		return
	}
	switch n.Kind {
	case yaml3.MappingNode:
		switch {
		case v.IsValid() && v.Kind() == reflect.Struct:
			fields := yamlFields(v.Type())
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, val := n.Content[i], n.Content[i+1]
				idx, ok := fields[k.Value]
				if !ok {
					w.unknown = append(w.unknown, unknown{path: join(path, k.Value), key: k.Value, line: k.Line})
					continue
				}
				w.walk(val, v.FieldByIndex(idx), join(path, k.Value))
			}
		case v.IsValid() && v.Kind() == reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, val := n.Content[i], n.Content[i+1]
				var elem reflect.Value
				if v.Type().Key().Kind() == reflect.String {
					elem = v.MapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()))
				}
				w.walk(val, elem, join(path, k.Value))
			}
		default:
			w.problems = append(w.problems, fmt.Sprintf("%s (line %d): a mapping where the config holds %s", path, n.Line, describe(v)))
		}
	case yaml3.SequenceNode:
		if len(n.Content) == 0 || !v.IsValid() || (v.Kind() != reflect.Slice && v.Kind() != reflect.Array) {
			w.leaf(n, v, path)
			return
		}
		if v.Len() != len(n.Content) {
			w.leaf(n, v, path)
			return
		}
		for i, item := range n.Content {
			w.walk(item, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml3.AliasNode:
		w.problems = append(w.problems, fmt.Sprintf("%s (line %d): aliases are not checked", path, n.Line))
	default:
		w.leaf(n, v, path)
	}
}

// leaf records a value and whether the loaded config holds what the file's text decodes to alone.
func (w *walker) leaf(n *yaml3.Node, v reflect.Value, path string) {
	out := value{Path: path, Line: n.Line, Written: written(n), GoType: describe(v)}
	if !v.IsValid() {
		w.values = append(w.values, out)
		return
	}
	out.Effective = jsonable(v)
	text, err := yaml3.Marshal(n)
	if err != nil {
		w.problems = append(w.problems, fmt.Sprintf("%s: %v", path, err))
	} else {
		alone := reflect.New(v.Type())
		if err := yaml2.Unmarshal(text, alone.Interface()); err == nil {
			out.Same = reflect.DeepEqual(alone.Elem().Interface(), v.Interface())
		}
	}
	w.values = append(w.values, out)
}

func written(n *yaml3.Node) any {
	switch n.Kind {
	case yaml3.ScalarNode:
		return n.Value
	case yaml3.SequenceNode:
		items := []any{}
		for _, c := range n.Content {
			items = append(items, written(c))
		}
		return items
	default:
		var v any
		_ = n.Decode(&v)
		return v
	}
}

func describe(v reflect.Value) string {
	if !v.IsValid() {
		return "none"
	}
	return v.Type().String()
}

func jsonable(v reflect.Value) any {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	x := v.Interface()
	if _, err := json.Marshal(x); err != nil {
		return fmt.Sprintf("%v", x)
	}
	return x
}

// absPath as setup/config/config.go absPath.
func absPath(dir, path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(dir, path)
}

func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range info.Deps {
		if m.Path == path {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return ""
}
