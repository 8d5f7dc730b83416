package scim

import "testing"

// isJSONNumber follows RFC 8259 §6 exactly: filter comparisons read a
// number only in that form.
func TestIsJSONNumber(t *testing.T) {
	for _, s := range []string{"0", "-0", "7", "-12", "10", "0.5", "-0.25", "1e3", "1E+3", "2.5e-07", "0e0", "123456789012345678901234567890"} {
		if !isJSONNumber(s) {
			t.Errorf("isJSONNumber(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "-", "01", "-01", ".5", "5.", "1e", "1e+", "1.e3", "+1", " 1", "1 ", "0x1", "1.2.3", "--1", "1e3.5", "NaN", "Infinity", "١"} {
		if isJSONNumber(s) {
			t.Errorf("isJSONNumber(%q) = true, want false", s)
		}
	}
}
