#!/usr/bin/env bash
# Runs the identity providers' own conformance suites against the real
# binary on loopback: Okta's SCIM 2.0 SPEC test (must pass 12/12) and
# Microsoft's SCIM Postman collection with newman (must pass but for the
# requests listed in entra-allowed-failures.txt, each with its reason).
# Usage: conformance.sh PATH-TO-BINARY
set -euo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
shared=${SCIMGATE_SHARED:-$here/../../shared}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

token=$(head -c 32 /dev/urandom | base64 | tr -d '+/=\n')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_gateway NAME: a fresh data dir, a receiver that is not there (events
# simply stay pending, which is not what these suites test).
start_gateway() {
  port=$(free_port); admin=$(free_port)
  mkdir -p "$work/$1"
  SCIMGATE_LISTEN=127.0.0.1:$port SCIMGATE_ADMIN_LISTEN=127.0.0.1:$admin SCIMGATE_DATA_DIR="$work/$1" \
  SCIMGATE_SCIM_TOKEN=$token SCIMGATE_ADMIN_TOKEN=$token SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks \
    "$bin" serve >"$work/$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "gateway did not start:"; cat "$work/$1.log"; exit 1
}
stop_gateway() { kill "$pid"; wait "$pid" || true; pid=""; }

echo "-- Okta SCIM 2.0 SPEC test"
start_gateway okta
base=http://127.0.0.1:$port/scim/v2
# The suite needs one user to exist first (its step 1 reads Resources[0]).
curl -fsS -X POST "$base/Users" -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' -d '{
  "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"first.user@example.com",
  "name":{"givenName":"First","familyName":"User"},"emails":[{"primary":true,"value":"first.user@example.com","type":"work"}],
  "active":true}' >/dev/null
python3 "$shared/conformance/okta/runscope_runner.py" "$shared/conformance/okta/Okta-SCIM-20-SPEC-Test.json" \
  --var "SCIMBaseURL=$base" --var "auth=Bearer $token" | tee "$work/okta.out"
tail -1 "$work/okta.out" | grep -q '^12 passed, 0 failed' || { echo "Okta SPEC suite: not 12/12"; exit 1; }
stop_gateway

echo "-- Microsoft SCIM Postman collection (newman)"
nm="$here/.node"
if [ ! -x "$nm/node_modules/.bin/newman" ]; then
  mkdir -p "$nm"
  npm install --prefix "$nm" --no-audit --no-fund --loglevel=error newman@6 >/dev/null
fi
start_gateway entra
"$nm/node_modules/.bin/newman" run "$shared/conformance/entra/ms-scim-tests.postman_collection.json" \
  --folder "Endpoint tests" --folder "User tests" --folder "Group tests" \
  --folder "ComplexAttribute tests" --folder "User tests with garbage" \
  --folder "Group tests with garbage" --folder "Teardown garbage" \
  --env-var Protocol=http --env-var Server=127.0.0.1 --env-var Port=:$port \
  --env-var Api=scim/v2 --env-var token=$token \
  --reporters cli,json --reporter-json-export "$work/newman.json" --color off >"$work/newman.out" 2>&1 || true
tail -40 "$work/newman.out"
python3 "$here/newman_check.py" "$work/newman.json" "$here/entra-allowed-failures.txt"
stop_gateway
