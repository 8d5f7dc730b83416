package check

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Snippet is one fenced code block of a Markdown file.
type Snippet struct {
	Lang string
	Code string
	Line int // of the opening fence
}

var fence = regexp.MustCompile("^```([a-z]*)\\s*$")

// Snippets returns the fenced code blocks under a "## " heading of a
// Markdown file, exactly as written, in order.
func Snippets(file, heading string) ([]Snippet, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var (
		out     []Snippet
		in      bool
		inBlock *Snippet
		found   bool
	)
	for i, line := range strings.Split(string(b), "\n") {
		if inBlock != nil {
			if strings.TrimSpace(line) == "```" {
				out = append(out, *inBlock)
				inBlock = nil
				continue
			}
			inBlock.Code += line + "\n"
			continue
		}
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == heading
			found = found || in
			continue
		}
		if m := fence.FindStringSubmatch(line); m != nil && in {
			inBlock = &Snippet{Lang: m[1], Line: i + 1}
		} else if m != nil {
			// A block outside the section: skip to its end.
			inBlock = &Snippet{Lang: "-skip-"}
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: no section %q", file, heading)
	}
	kept := out[:0]
	for _, s := range out {
		if s.Lang != "-skip-" {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// CodeBlocks returns every fenced block of a Markdown file whose language
// is one of langs, with its line.
func CodeBlocks(file string, langs ...string) ([]Snippet, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []Snippet
	var cur *Snippet
	for i, line := range strings.Split(string(b), "\n") {
		if cur != nil {
			if strings.TrimSpace(line) == "```" {
				out = append(out, *cur)
				cur = nil
			} else {
				cur.Code += line + "\n"
			}
			continue
		}
		if m := fence.FindStringSubmatch(line); m != nil {
			cur = &Snippet{Lang: m[1], Line: i + 1}
		}
	}
	kept := out[:0]
	for _, s := range out {
		for _, l := range langs {
			if s.Lang == l {
				kept = append(kept, s)
			}
		}
	}
	return kept, nil
}
