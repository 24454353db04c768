#!/usr/bin/env bash
# Build the Toxiproxy server (fault-injecting TCP proxy for tests/e2e) at a pinned version.
#
# The version is pinned by the wrapper module tools/toxiproxy/go.mod. The binary goes to
# ${K8S_EDGE_CACHE:-$HOME/.cache/k8s-edge}/toxiproxy-<version>/bin/toxiproxy-server, outside
# the repo; an up-to-date build (same go.mod/go.sum, Go version and recipe) is a fast no-op.
#
# Usage: tools/build-toxiproxy.sh [--print-bin]
#   Logs go to stderr; the last line on stdout is the binary's path.
#   --print-bin: print the path and exit (1 if not built) without building.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${K8S_EDGE_CACHE:-$HOME/.cache/k8s-edge}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly

recipe=1  # bump when the build recipe changes the binary
mod="$here/toxiproxy/go.mod"
version="$(awk '$1 == "github.com/Shopify/toxiproxy/v2" && $2 ~ /^v/ { print $2; exit }' "$mod")"
[[ -n "$version" ]] || { echo "cannot read the pinned toxiproxy version from $mod" >&2; exit 1; }
dir="$cache_root/toxiproxy-$version"
bin="$dir/bin/toxiproxy-server"
stamp="$( { echo "recipe=$recipe $(go env GOVERSION)"; cat "$mod" "$here/toxiproxy/go.sum"; } | sha256sum | cut -c1-16)"

built() { [[ -x "$bin" && -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$stamp" ]]; }

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$bin"
  built
  exit
fi
if built; then
  echo "toxiproxy-server $version (cached): $bin" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/toxiproxy-$version.lock"
flock 9
if built; then  # built by whoever held the lock
  echo "$bin"
  exit 0
fi
tmp="$(mktemp -d "$cache_root/.build-toxiproxy.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building toxiproxy-server $version ..." >&2
(cd "$here/toxiproxy" && go build -trimpath \
  -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=$version" \
  -o "$tmp/toxiproxy-server" github.com/Shopify/toxiproxy/v2/cmd/server)
"$tmp/toxiproxy-server" --version >&2 || true
mkdir -p "$dir/bin"
mv "$tmp/toxiproxy-server" "$bin"
echo "$stamp" >"$dir/.complete"
echo "built: $bin" >&2
echo "$bin"
