#!/bin/bash
# Makes release1.db: the release-1 binary (git f67bb54) serving a fresh data
# dir, the SCIM requests below (look-alike names release 1 accepted, an email
# with a NUL, pending and resolved managers, nested groups), then the file
# compacted with bbolt.Compact (16 MB of preallocation down to 128 KB; keys,
# values and bucket sequences are copied as they are). The ids it prints go
# to release1.ids. Run from the repository root: gateway/store/testdata/release1.sh
set -euo pipefail
work=$(mktemp -d)
git archive f67bb54 | tar -x -C "$work/"
(cd "$work" && go build -o "$work/scimgate-r1" ./cmd/scimgate)
R1="$work/scimgate-r1"
DATA="$work/data"
mkdir -p "$DATA"
export SCIMGATE_DATA_DIR="$DATA" SCIMGATE_SCIM_TOKEN=r1-fixture-token-0123456789 SCIMGATE_ADMIN_TOKEN=r1-admin-token-0123456789 \
  SCIMGATE_LISTEN=127.0.0.1:18080 SCIMGATE_ADMIN_LISTEN=127.0.0.1:18081 SCIMGATE_WEBHOOK_URL=http://127.0.0.1:1/hooks \
  SCIMGATE_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
"$R1" serve >"$work/serve.log" 2>&1 &
pid=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18081/healthz && break; sleep 0.1; done
B=http://127.0.0.1:18080/scim/v2
post() { curl -s -X POST "$B/$1" -H "Authorization: Bearer $SCIMGATE_SCIM_TOKEN" -H 'Content-Type: application/scim+json' --data-binary "$2"; }
id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
ada=$(post Users '{"userName":"ada@example.com","externalId":"ext-ada","emails":[{"value":"ada@example.com","type":"work"}],"active":true}' | id)
ada2=$(post Users '{"userName":"ada@example.com ","emails":[{"value":"Ada@Example.com ","type":"work"}]}' | id)
ada3=$(post Users '{"userName":"\tADA@example.com"}' | id)
jose=$(post Users '{"userName":"jos\u00e9@example.com","externalId":"ext-jos\u00e9"}' | id)
jose2=$(post Users '{"userName":"jose\u0301@example.com","externalId":"ext-jose\u0301"}' | id)
sam=$(post Users '{"userName":"sam@example.com"}' | id)
sam2=$(post Users '{"userName":"\u017fam@example.com"}' | id)
zw=$(post Users '{"userName":"zw\u200bj@example.com"}' | id)
zw2=$(post Users '{"userName":"zwj@example.com"}' | id)
mal=$(post Users '{"userName":"mallory@example.com","emails":[{"value":"boss@x.com\u0000zzz","type":"work"}]}' | id)
rep1=$(post Users '{"userName":"report1@example.com","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"boss@x.com"}}}' | id)
rep2=$(post Users '{"userName":"report2@example.com","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"Boss2@X.com"}}}' | id)
rep3=$(post Users "{\"userName\":\"report3@example.com\",\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\":{\"manager\":{\"value\":\"$ada\"}}}" | id)
old=$(post Users '{"userName":"old@example.com","active":false}' | id)
eng=$(post Groups "{\"displayName\":\"Engineering\",\"externalId\":\"g-eng\",\"members\":[{\"value\":\"$ada\"},{\"value\":\"$sam\"},{\"value\":\"$rep1\"}]}" | id)
eng2=$(post Groups "{\"displayName\":\"engineering \",\"members\":[{\"value\":\"$sam2\"}]}" | id)
empty=$(post Groups '{"displayName":"Empty"}' | id)
nested=$(post Groups "{\"displayName\":\"All\",\"members\":[{\"value\":\"$eng\"},{\"value\":\"$old\"}]}" | id)
kill $pid; wait $pid || true
cat > gateway/store/testdata/release1.ids <<IDS
ada=$ada
ada2=$ada2
ada3=$ada3
jose=$jose
jose2=$jose2
sam=$sam
sam2=$sam2
zw=$zw
zw2=$zw2
mallory=$mal
report1=$rep1
report2=$rep2
report3=$rep3
old=$old
eng=$eng
eng2=$eng2
empty=$empty
all=$nested
IDS
cat > "$work/compact.go" <<'GO'
package main

import (
	"log"
	"os"

	bolt "go.etcd.io/bbolt"
)

func main() {
	src, err := bolt.Open(os.Args[1], 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	dst, err := bolt.Open(os.Args[2], 0o600, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := bolt.Compact(dst, src, 0); err != nil {
		log.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		log.Fatal(err)
	}
}
GO
rm -f gateway/store/testdata/release1.db
go run "$work/compact.go" "$DATA/scimgate.db" gateway/store/testdata/release1.db
rm -rf "$work"
