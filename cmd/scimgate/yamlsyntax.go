package main

import (
	"bytes"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlSyntaxError turns yaml.v3's syntax error of data into a ConfigError
// on the line where the problem is. yaml.v3 reports the line of the
// construct it was inside, counted from 0 for parser errors: an unclosed
// "{" on line 3 says line 2, a bad indent the line where the enclosing
// block began. The line found here is the one after the longest prefix of
// whole lines that parses: everything before it is valid YAML, so the
// problem is on it, or starts on it (a "{" or a quote not closed).
func yamlSyntaxError(name string, data []byte, err error) *ConfigError {
	problem := yamlLine.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "")
	line := problemLine(data)
	if line == 0 {
		return &ConfigError{File: name, Err: err}
	}
	text := lineText(data, line)
	var hint string
	switch {
	case leadingTab(text) || strings.Contains(problem, "tab") && strings.Contains(text, "\t"):
		hint = "a tab character indents this line: YAML indents with spaces only"
	case strings.Contains(problem, "expected ',' or '}'"):
		hint = `a "{" opened on this line is not closed, or a comma is missing`
	case strings.Contains(problem, "expected ',' or ']'"):
		hint = `a "[" opened on this line is not closed, or a comma is missing`
	case strings.Contains(problem, "expected '-' indicator"), strings.Contains(problem, "did not find expected key"),
		strings.Contains(problem, "mapping values are not allowed"), strings.Contains(problem, "block"):
		hint = "check this line's indentation against the lines above it"
	}
	msg := problem
	if hint != "" {
		msg = hint + " (YAML: " + problem + ")"
	}
	return &ConfigError{File: name, Line: line, Err: &yamlSyntax{msg: msg, err: err}}
}

// yamlSyntax is the located message; it unwraps to yaml.v3's error.
type yamlSyntax struct {
	msg string
	err error
}

func (e *yamlSyntax) Error() string { return e.msg }
func (e *yamlSyntax) Unwrap() error { return e.err }

var yamlLine = regexp.MustCompile(`^line \d+: `)

// problemLine returns the 1-based line after the longest prefix of whole
// lines of data that parses as YAML (data itself does not), or 0 when it
// cannot tell. A binary search finds a line whose prefix parses and whose
// own line does not; a line that only opens what later lines close (a
// quoted string or a "{" written over several lines) is told from a
// problem because a prefix a few lines further parses again.
func problemLine(data []byte) int {
	var ends []int // ends[i]: the offset after line i+1
	for off := 0; off < len(data); {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			ends = append(ends, len(data))
			break
		}
		off += i + 1
		ends = append(ends, off)
	}
	parses := func(m int) bool { // the first m lines
		var n yaml.Node
		return yaml.Unmarshal(data[:ends[m-1]], &n) == nil
	}
	const closeWithin = 20 // lines
	lo, hi := 0, len(ends) // the first lo lines parse, the first hi do not
	if hi == 0 {
		return 0
	}
	for {
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			if parses(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		again := 0
		for m := hi + 1; m < len(ends) && m <= hi+closeWithin; m++ {
			if parses(m) {
				again = m
				break
			}
		}
		if again == 0 {
			return hi
		}
		lo, hi = again, len(ends)
	}
}

// lineText returns line n (1-based) of data.
func lineText(data []byte, n int) string {
	lines := strings.SplitAfter(string(data), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}

// leadingTab reports whether the indentation of line holds a tab.
func leadingTab(line string) bool {
	indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	return strings.Contains(indent, "\t")
}
