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
if ldd bin/scimgate 2>&1 | grep -q 'not a dynamic executable'; then
  echo "bin/scimgate is statically linked"
else
  echo "bin/scimgate is not static:"; ldd bin/scimgate; exit 1
fi
bin/scimgate version
