package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// lookupEnv returns the value of the environment variable name, following
// the Docker and Kubernetes secrets convention: when name is unset (or
// empty) and name_FILE is set, the value is the content of that file, with
// its trailing newline trimmed. Setting both is an error that names both; a
// file that cannot be read or is empty is an error that names the variable
// and the path, never the content.
func lookupEnv(getenv func(string) string, name string) (string, error) {
	v, file := getenv(name), getenv(name+"_FILE")
	switch {
	case file == "":
		return v, nil
	case v != "":
		return "", fmt.Errorf("both %s and %s_FILE are set: set only one of them", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, once
		}
		return "", fmt.Errorf("%s_FILE=%s: cannot read the file: %v", name, file, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s_FILE=%s: the file is empty", name, file)
	}
	return s, nil
}

// fileEnv is getenv with the _FILE convention applied to every variable
// the configuration reads (the SCIMGATE_* defaults and every ${VAR} in a
// config file). Lookups cannot fail, so that DefaultConfig stays a plain
// function of its environment; the problems are collected and reported by
// Err, each once.
type fileEnv struct {
	getenv func(string) string
	errs   map[string]error
}

func newFileEnv(getenv func(string) string) *fileEnv {
	return &fileEnv{getenv: getenv, errs: map[string]error{}}
}

// Get returns the variable's value ("" when it cannot be resolved; see Err).
func (e *fileEnv) Get(name string) string {
	v, err := e.Lookup(name)
	if err != nil {
		e.errs[name] = err
	}
	return v
}

// Lookup is lookupEnv over the wrapped environment.
func (e *fileEnv) Lookup(name string) (string, error) { return lookupEnv(e.getenv, name) }

// Err joins the problems of every Get so far, sorted by variable.
func (e *fileEnv) Err() error {
	names := make([]string, 0, len(e.errs))
	for n := range e.errs {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := make([]error, 0, len(names))
	for _, n := range names {
		errs = append(errs, e.errs[n])
	}
	return errors.Join(errs...)
}
