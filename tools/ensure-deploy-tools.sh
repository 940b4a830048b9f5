#!/usr/bin/env bash
# Build the tools the deploy tests run, once, into ${PIZZERIA_TOOLS_BIN:-~/.cache/pizzeria/bin}:
#   helm           renders and lints the chart (deploy/helm/pizzeria)
#   actionlint     checks the GitHub Actions workflow beyond its schema
#   compose-check  loads the Compose files as `docker compose` does (tools/compose-check)
# All three are Go programs built from the Go module proxy (Go must be installed). A tool is
# rebuilt only when its pinned version (or, for compose-check, its source) changes.
set -euo pipefail

HELM_VERSION=v3.22.0
ACTIONLINT_VERSION=v1.7.12

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PIZZERIA_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/pizzeria/bin}
mkdir -p "$BIN"

if ! command -v go >/dev/null 2>&1; then
  echo "ensure-deploy-tools: Go is needed to build helm, actionlint and compose-check" >&2
  exit 1
fi

# up_to_date NAME STAMP: the tool exists and was built from STAMP.
up_to_date() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.stamp" 2>/dev/null)" = "$2" ]; }

built() { echo "$2" > "$BIN/.$1.stamp"; echo "ensure-deploy-tools: $1 ready ($2)"; }

if ! up_to_date helm "$HELM_VERSION"; then
  echo "ensure-deploy-tools: building helm $HELM_VERSION (a few minutes, once)"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  built helm "$HELM_VERSION"
fi

if ! up_to_date actionlint "$ACTIONLINT_VERSION"; then
  echo "ensure-deploy-tools: building actionlint $ACTIONLINT_VERSION"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  built actionlint "$ACTIONLINT_VERSION"
fi

source_hash=$(cat "$ROOT"/tools/compose-check/{go.mod,go.sum,main.go} | sha256sum | cut -c1-16)
if ! up_to_date compose-check "$source_hash"; then
  echo "ensure-deploy-tools: building compose-check"
  (cd "$ROOT/tools/compose-check" && go build -o "$BIN/compose-check" .)
  built compose-check "$source_hash"
fi
