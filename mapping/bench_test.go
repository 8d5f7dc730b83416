package mapping

import (
	"path/filepath"
	"testing"
)

// BenchmarkMapUser maps a CybSafe-shaped Okta user (core, enterprise and
// custom extension, resolved manager) with the CybSafe rules.
func BenchmarkMapUser(b *testing.B) {
	m, err := Compile(mustLoadRules(b, filepath.Join("testdata", "cybsafe.rules.yaml")))
	if err != nil {
		b.Fatal(err)
	}
	doc := decodeDoc(b, filepath.Join("testdata", "cybsafe.in.json"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.MapUser(doc, resolver); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapUserDefault maps the same user with DefaultRules.
func BenchmarkMapUserDefault(b *testing.B) {
	m, err := Compile(DefaultRules())
	if err != nil {
		b.Fatal(err)
	}
	doc := decodeDoc(b, filepath.Join("testdata", "cybsafe.in.json"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.MapUser(doc, resolver); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDiff(b *testing.B) {
	m, err := Compile(mustLoadRules(b, filepath.Join("testdata", "cybsafe.rules.yaml")))
	if err != nil {
		b.Fatal(err)
	}
	doc := decodeDoc(b, filepath.Join("testdata", "cybsafe.in.json"))
	r1, _ := m.MapUser(doc, resolver)
	r2, _ := m.MapUser(doc, resolver)
	b.ReportAllocs()
	for b.Loop() {
		Diff(r1.Record, r2.Record)
	}
}
