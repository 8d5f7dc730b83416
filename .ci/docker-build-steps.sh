#!/usr/bin/env bash
# Runs the Dockerfile's build stage commands on this machine (there is no
# Docker engine in CI) and checks what the runtime stage relies on: a static
# binary that runs without libc.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep in step with the Dockerfile's RUN line.
cmd=$(grep -o 'CGO_ENABLED=0 .*go build [^&]*' Dockerfile | head -1 | sed 's/\${VERSION}/ci/; s#/out/scimgate#bin/scimgate#')
echo "+ $cmd"
mkdir -p bin
eval "$cmd"
# ldd exits non-zero on a static binary, so read its words, not its status.
out=$(ldd bin/scimgate 2>&1 || true)
if printf '%s\n' "$out" | grep -q 'not a dynamic executable'; then
  echo "bin/scimgate is statically linked"
else
  echo "bin/scimgate is not static:"; printf '%s\n' "$out"; exit 1
fi
bin/scimgate version
