// Command yamlcheck fails on every YAML scalar that YAML 1.1 and YAML 1.2 readers take differently, in the YAML
// files users apply and Helm reads (`tools/yamlcheck/check.sh` names them; `make check-generated` runs it).
//
// Why a Go program: the readers users have are Go. kubectl (`apply -f`) splits a stream with
// k8s.io/apimachinery's YAMLReader and reads each document with sigs.k8s.io/yaml, which is go-yaml v2 underneath
// (YAML 1.1 resolution: `Off`, `yes`, `on` are booleans, `0777` is octal); Helm reads values.yaml, Chart.yaml,
// `.Files.Get | fromYaml` and the rendered manifests with the same sigs.k8s.io/yaml. This program links those very
// packages, at the versions kubectl is built with here (check.sh compares them with tools/controlplane/go.mod), so
// it sees each document exactly as kubectl does. The other side is YAML 1.2's core schema, what serde_yaml (the
// tests, regcred) and other 1.2 readers follow. Its resolution rules are the spec's (YAML 1.2.2, 10.3.2) and are
// written out below rather than borrowed from go.yaml.in/yaml/v3, whose resolver keeps some YAML 1.1 habits
// (`0777` is octal there too, `0b1` binary). A document is parsed once with go.yaml.in/yaml/v3 for its node tree
// (each scalar's style, line and column), and every plain (unquoted) scalar is resolved three ways:
//
//   - by YAML 1.2's core schema;
//   - by kubectl's reader: the value sigs.k8s.io/yaml gives at the same place of the same document;
//   - by YAML 1.1's type repository (yaml.org/type), which other 1.1 readers (PyYAML, hence Ansible and many CI
//     tools) implement in full: sexagesimal `1:20`, `1_000`, `0b101`, timestamps. go-yaml v2 leaves some of these
//     strings, so kubectl alone would not catch them.
//
// Any disagreement is reported as `file:line:column: path: ...` and the exit status is 1. Quoted and block scalars
// are strings to every reader; they are only checked against kubectl's reading.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"regexp"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
)

// value is a scalar as a reader resolves it: kind is null, bool, int, float, timestamp or str; text is canonical
// for the kind (decimal for int, Go's shortest form for float, the characters for str).
type value struct{ kind, text string }

func (v value) String() string {
	switch v.kind {
	case "null":
		return "null"
	case "str":
		return "the string " + strconv.Quote(v.text)
	case "timestamp":
		return "a timestamp"
	default:
		return "the " + map[string]string{"bool": "boolean", "int": "integer", "float": "float"}[v.kind] + " " + v.text
	}
}

func full(pattern string) *regexp.Regexp { return regexp.MustCompile(`^(?:` + pattern + `)$`) }

// YAML 1.2.2, 10.3.2 (core schema).
var (
	core12Null  = full(`null|Null|NULL|~|`)
	core12Bool  = full(`true|True|TRUE|false|False|FALSE`)
	core12Int10 = full(`[-+]?[0-9]+`)
	core12Int8  = full(`0o[0-7]+`)
	core12Int16 = full(`0x[0-9a-fA-F]+`)
	core12Float = full(`[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`)
	core12Inf   = full(`[-+]?\.(inf|Inf|INF)`)
	core12NaN   = full(`\.(nan|NaN|NAN)`)
)

// core12 resolves a plain scalar as YAML 1.2's core schema does.
func core12(s string) value {
	switch {
	case core12Null.MatchString(s):
		return value{"null", ""}
	case core12Bool.MatchString(s):
		return value{"bool", strings.ToLower(s)}
	case core12Int10.MatchString(s):
		return integer(s, 10)
	case core12Int8.MatchString(s):
		return integer(s[2:], 8)
	case core12Int16.MatchString(s):
		return integer(s[2:], 16)
	case core12Float.MatchString(s), core12Inf.MatchString(s), core12NaN.MatchString(s):
		return float(s)
	}
	return value{"str", s}
}

// YAML 1.1's type repository: https://yaml.org/type/{null,bool,int,float,timestamp}.html. The float pattern is
// the spec's with one decimal point (its `[0-9.]*` would make `1.2.3` a float, which no reader does).
var (
	yaml11Null      = full(`~|null|Null|NULL|`)
	yaml11True      = full(`y|Y|yes|Yes|YES|true|True|TRUE|on|On|ON`)
	yaml11False     = full(`n|N|no|No|NO|false|False|FALSE|off|Off|OFF`)
	yaml11Int2      = full(`[-+]?0b[0-1_]+`)
	yaml11Int8      = full(`[-+]?0[0-7_]+`)
	yaml11Int10     = full(`[-+]?(0|[1-9][0-9_]*)`)
	yaml11Int16     = full(`[-+]?0x[0-9a-fA-F_]+`)
	yaml11Int60     = full(`[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`)
	yaml11Float     = full(`[-+]?([0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)([eE][-+][0-9]+)?`)
	yaml11Float60   = full(`[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`)
	yaml11Inf       = full(`[-+]?\.(inf|Inf|INF)`)
	yaml11NaN       = full(`\.(nan|NaN|NAN)`)
	yaml11Timestamp = full(`[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?`)
)

// yaml11 resolves a plain scalar as YAML 1.1's type repository does.
func yaml11(s string) value {
	plain := strings.ReplaceAll(s, "_", "")
	switch {
	case yaml11Null.MatchString(s):
		return value{"null", ""}
	case yaml11True.MatchString(s):
		return value{"bool", "true"}
	case yaml11False.MatchString(s):
		return value{"bool", "false"}
	case yaml11Int2.MatchString(s):
		return integer(strings.Replace(plain, "0b", "", 1), 2)
	case yaml11Int8.MatchString(s):
		return integer(plain, 8)
	case yaml11Int10.MatchString(s):
		return integer(plain, 10)
	case yaml11Int16.MatchString(s):
		return integer(strings.Replace(plain, "0x", "", 1), 16)
	case yaml11Int60.MatchString(s):
		return sexagesimal(plain, false)
	case yaml11Float.MatchString(s), yaml11Inf.MatchString(s), yaml11NaN.MatchString(s):
		return float(plain)
	case yaml11Float60.MatchString(s):
		return sexagesimal(plain, true)
	case yaml11Timestamp.MatchString(s):
		return value{"timestamp", s}
	}
	return value{"str", s}
}

// integer reads digits (with an optional sign) in base.
func integer(s string, base int) value {
	negative := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	n, ok := new(big.Int).SetString(s, base)
	if !ok {
		return value{"int", "?" + s}
	}
	if negative {
		n.Neg(n)
	}
	return value{"int", n.String()}
}

func float(s string) value {
	lower := strings.ToLower(strings.TrimLeft(s, "+"))
	switch lower {
	case ".inf":
		return value{"float", "+Inf"}
	case "-.inf":
		return value{"float", "-Inf"}
	case ".nan":
		return value{"float", "NaN"}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return value{"float", "?" + s}
	}
	return value{"float", strconv.FormatFloat(f, 'g', -1, 64)}
}

// sexagesimal reads YAML 1.1's base 60 (`1:20` is 80, `1:20.5` is 80.5).
func sexagesimal(s string, isFloat bool) value {
	negative := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	total := 0.0
	for _, part := range strings.Split(s, ":") {
		digit, err := strconv.ParseFloat(part, 64)
		if err != nil {
			return value{"str", s}
		}
		total = total*60 + digit
	}
	if negative {
		total = -total
	}
	if isFloat {
		return value{"float", strconv.FormatFloat(total, 'g', -1, 64)}
	}
	return value{"int", strconv.FormatFloat(math.Trunc(total), 'f', 0, 64)}
}

// fromJSON is what kubectl's reader made of a scalar, as a value comparable with core12's.
func fromJSON(v any) value {
	switch v := v.(type) {
	case nil:
		return value{"null", ""}
	case bool:
		return value{"bool", strconv.FormatBool(v)}
	case json.Number:
		return value{"number", v.String()}
	case string:
		return value{"str", v}
	case map[string]any:
		return value{"mapping", ""}
	case []any:
		return value{"sequence", ""}
	}
	return value{"?", fmt.Sprint(v)}
}

// sameAsKubectl: JSON keeps no int/float distinction (`1.0` arrives as 1), so numbers compare by value.
func sameAsKubectl(core, kubectl value) bool {
	if kubectl.kind != "number" {
		return core == kubectl
	}
	if core.kind != "int" && core.kind != "float" {
		return false
	}
	a, okA := new(big.Float).SetString(core.text)
	b, okB := new(big.Float).SetString(kubectl.text)
	return okA && okB && a.Cmp(b) == 0
}

type checker struct {
	file     string
	firstRow int // the line of the file where the current document starts, minus one
	problems []string
}

func (c *checker) report(n *yaml3.Node, path, format string, args ...any) {
	at := fmt.Sprintf("%s:%d:%d: %s: ", c.file, c.firstRow+n.Line, n.Column, strings.TrimPrefix(path, "."))
	c.problems = append(c.problems, at+fmt.Sprintf(format, args...))
}

// scalar checks one scalar node; kubectl is its reading by sigs.k8s.io/yaml (absent when kubectl read the
// mapping key above it differently). It says whether it reported anything.
func (c *checker) scalar(n *yaml3.Node, path string, kubectl any, present bool) bool {
	plain := n.Style&(yaml3.DoubleQuotedStyle|yaml3.SingleQuotedStyle|yaml3.LiteralStyle|yaml3.FoldedStyle) == 0
	if n.Style&yaml3.TaggedStyle != 0 {
		return false // an explicit tag says what it is to every reader
	}
	core := value{"str", n.Value}
	if plain {
		core = core12(n.Value)
		if other := yaml11(n.Value); other != core {
			who := "YAML 1.1 readers (yaml.org/type: PyYAML; kubectl and Helm too)"
			if present && sameAsKubectl(core, fromJSON(kubectl)) {
				who = "YAML 1.1 readers (yaml.org/type: PyYAML; not kubectl's go-yaml)"
			} else if !present {
				who = "YAML 1.1 readers (yaml.org/type: PyYAML, kubectl, Helm)"
			}
			c.report(n, path, "the plain scalar %s is %s to YAML 1.2 (core schema) but %s to %s: quote it", n.Value, core, other, who)
			return true
		}
	}
	if !present {
		return false
	}
	if got := fromJSON(kubectl); !sameAsKubectl(core, got) {
		c.report(n, path, "the scalar %s is %s to YAML 1.2 (core schema) but %s to kubectl and Helm (sigs.k8s.io/yaml, YAML 1.1): quote it", n.Value, core, got)
		return true
	}
	return false
}

// walk checks node n at path against kubectl's reading of the same place.
func (c *checker) walk(n *yaml3.Node, path string, kubectl any, present bool) {
	if n.Kind == yaml3.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml3.DocumentNode:
		for _, child := range n.Content {
			c.walk(child, path, kubectl, present)
		}
	case yaml3.ScalarNode:
		c.scalar(n, path, kubectl, present)
	case yaml3.SequenceNode:
		items, _ := kubectl.([]any)
		for i, child := range n.Content {
			c.walk(child, fmt.Sprintf("%s[%d]", path, i), at(items, i), present && i < len(items))
		}
	case yaml3.MappingNode:
		fields, _ := kubectl.(map[string]any)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Kind == yaml3.ScalarNode && key.Value == "<<" && key.Style == 0 {
				c.walk(val, path, kubectl, false) // a merge key: its fields are checked where they are written
				continue
			}
			name := key.Value
			if key.Kind == yaml3.ScalarNode && key.Style == 0 && core12(key.Value).kind == "null" {
				name = "null"
			}
			field, found := fields[name]
			if key.Kind == yaml3.ScalarNode && !c.scalar(key, path+"."+name+" (key)", nil, false) && present && !found {
				c.report(key, path+"."+name+" (key)", "kubectl and Helm (sigs.k8s.io/yaml, YAML 1.1) read the key %s as another key: quote it", key.Value)
			}
			c.walk(val, path+"."+name, field, present && found)
		}
	}
}

func at(items []any, i int) any {
	if i < len(items) {
		return items[i]
	}
	return nil
}

// checkFile checks every document of a file, split and read as kubectl splits and reads it.
func checkFile(file string) ([]string, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	c := checker{file: file}
	reader := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(text)))
	offset := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: kubectl cannot split it into documents: %w", file, err)
		}
		start := bytes.Index(text[offset:], doc)
		if start < 0 {
			return nil, fmt.Errorf("%s: a document kubectl read is not in the file as it is", file)
		}
		c.firstRow = bytes.Count(text[:offset+start], []byte("\n"))
		offset += start + len(doc)

		var root yaml3.Node
		if err := yaml3.Unmarshal(doc, &root); err != nil {
			return nil, fmt.Errorf("%s:%d: a YAML 1.2 reader cannot read it: %w", file, c.firstRow+1, err)
		}
		if root.Kind == 0 {
			continue // only comments
		}
		asJSON, err := k8syaml.ToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: kubectl cannot read it: %w", file, c.firstRow+1, err)
		}
		decoder := json.NewDecoder(bytes.NewReader(asJSON))
		decoder.UseNumber()
		var kubectl any
		if err := decoder.Decode(&kubectl); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, c.firstRow+1, err)
		}
		c.walk(&root, "", kubectl, true)
	}
	return c.problems, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: yamlcheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range os.Args[1:] {
		problems, err := checkFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
		for _, p := range problems {
			fmt.Println(p)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
