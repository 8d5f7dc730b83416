package scim

import "testing"

func TestProject(t *testing.T) {
	users, groups := NewUserResourceType(), NewGroupResourceType()
	user := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","password":"p",
  "name":{"givenName":"G","familyName":"F"},"emails":[{"value":"w@x","type":"work"},{"value":"h@x","type":"home"}],
  "meta":{"resourceType":"User"},"custom":"c",
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D","manager":{"value":"m"}}}`
	tests := []struct {
		name  string
		rt    *ResourceType
		doc   string
		attrs []string
		excl  []string
		want  string
	}{
		{"none drops password and the undefined custom", users, user, nil, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","userName":"u","name":{"givenName":"G","familyName":"F"},"emails":[{"value":"w@x","type":"work"},{"value":"h@x","type":"home"}],"meta":{"resourceType":"User"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D","manager":{"value":"m"}}}`},
		{"attributes userName,emails", users, user, []string{"userName", "emails"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","emails":[{"value":"w@x","type":"work"},{"value":"h@x","type":"home"}]}`},
		{"attributes comma list and case", users, user, []string{"USERNAME, Name.GivenName"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","name":{"givenName":"G"}}`},
		{"attributes meta", users, user, []string{"meta"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","meta":{"resourceType":"User"}}`},
		{"attributes password never", users, user, []string{"password"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1"}`},
		{"attributes value filter", users, user, []string{`emails[type eq "work"]`}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","emails":[{"value":"w@x","type":"work"}]}`},
		{"attributes value filter sub", users, user, []string{`emails[type eq "work"].value`}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","emails":[{"value":"w@x"}]}`},
		{"attributes emails.value", users, user, []string{`emails.value`}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","emails":[{"value":"w@x"},{"value":"h@x"}]}`},
		{"attributes extension attr", users, user, []string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}`},
		{"attributes extension sub", users, user, []string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m"}}}`},
		{"attributes bare extension", users, user, []string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D","manager":{"value":"m"}}}`},
		{"attributes core URN", users, user, []string{"urn:ietf:params:scim:schemas:core:2.0:User:userName"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u"}`},
		{"attributes absent sub drops parent", users, user, []string{"name.middleName"}, nil,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1"}`},
		{"excluded members", groups, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G","members":[{"value":"u"}]}`, nil, []string{"members"},
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G"}`},
		{"excluded id and schemas ignored", users, `{"schemas":["s"],"id":"1","userName":"u"}`, nil, []string{"id", "schemas", "USERNAME"},
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1"}`},
		{"excluded sub", users, user, nil, []string{"name.givenName", "emails.type", "meta", "custom"},
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","userName":"u","name":{"familyName":"F"},"emails":[{"value":"w@x"},{"value":"h@x"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D","manager":{"value":"m"}}}`},
		{"excluded value filter", users, user, nil, []string{`emails[type eq "home"]`},
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","userName":"u","name":{"givenName":"G","familyName":"F"},"emails":[{"value":"w@x","type":"work"}],"meta":{"resourceType":"User"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D","manager":{"value":"m"}}}`},
		{"excluded extension attrs empties it", users, `{"id":"1","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}`, nil,
			[]string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1"}`},
		{"excluded bare extension", users, user, nil, []string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "emails", "name", "meta", "custom"},
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u"}`},
		{"nil rt keeps password", nil, `{"id":"1","password":"p"}`, []string{"password"}, nil, `{"id":"1","password":"p"}`},
		{"invalid names ignored", users, `{"id":"1","userName":"u"}`, []string{"a b", "userName"}, nil, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustDoc(t, tt.doc)
			before := canon(t, doc)
			got := Project(doc, tt.rt, tt.attrs, tt.excl)
			if g, w := canon(t, got), canonJSON(t, tt.want); g != w {
				t.Errorf("Project(%q, %q)\n = %s\nwant %s", tt.attrs, tt.excl, g, w)
			}
			if canon(t, doc) != before {
				t.Errorf("Project modified doc")
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	got := canon(t, splitList(` userName , emails[type eq "a,b"], name.givenName,,`))
	if want := `["userName","emails[type eq \"a,b\"]","name.givenName"]`; got != want {
		t.Errorf("splitList = %s, want %s", got, want)
	}
}
