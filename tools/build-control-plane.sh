#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kubectl, etcd) and kubemark (the hollow
# kubelet the tests and the demo run as edge nodes' kubelets) at pinned versions.
#
# Versions are pinned by the wrapper modules tools/kube/go.mod (k8s.io/kubernetes plus a
# replace for every k8s.io staging module) and tools/etcd/go.mod (go.etcd.io/etcd/server/v3).
# Binaries go to ${K8S_EDGE_CACHE:-$HOME/.cache/k8s-edge}/<key>/bin, outside the repo; <key>
# names the versions plus a hash of the wrapper modules, the Go version and this script's
# build recipe, so a change to any of them builds into a fresh directory and an unchanged
# checkout is a fast no-op.
#
# Usage: tools/build-control-plane.sh [--print-bin-dir]
#   Logs go to stderr; the last line on stdout is the bin directory.
#   --print-bin-dir: print the directory and exit (1 if not built) without building.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${K8S_EDGE_CACHE:-$HOME/.cache/k8s-edge}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly

# Bump when the build recipe below changes in a way that changes the binaries.
recipe=1

mod_version() { # <go.mod> <module> -> version from its require line
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

k8s_version="$(mod_version "$here/kube/go.mod" k8s.io/kubernetes)"
etcd_version="$(mod_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || { echo "cannot read pinned versions" >&2; exit 1; }
go_version="$(go env GOVERSION)"
# Comments in go.mod do not change the binaries, so they do not change the key.
digest="$( { echo "recipe=$recipe $go_version"; grep -hv '^[[:space:]]*//' "$here/kube/go.mod" \
  "$here/etcd/go.mod"; cat "$here/kube/go.sum" "$here/etcd/go.sum"; } | sha256sum | cut -c1-10)"
key="k8s-${k8s_version}_etcd-${etcd_version}_${digest}"
dir="$cache_root/$key"
bin="$dir/bin"

built() { [[ -f "$dir/.complete" && -x "$bin/kube-apiserver" && -x "$bin/kubectl" && -x "$bin/etcd" && -x "$bin/kubemark" ]]; }

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$bin"
  built
  exit
fi

if built; then
  echo "control plane binaries (cached): $bin" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/$key.lock"
if ! flock -n 9; then
  echo "another build of $key is running; waiting for it" >&2
  flock 9
fi
if built; then # built by whoever held the lock
  echo "$bin"
  exit 0
fi

tmp="$(mktemp -d "$cache_root/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

# Version stamps, as the kubernetes release build sets them (hack/lib/version.sh), so that
# `kubectl version` and the apiserver's /version report the pinned release.
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
build_date="$(date -u -d "@$(stat -c %Y "$here/kube/go.mod")" +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "building etcd $etcd_version ..." >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
echo "building kube-apiserver, kubectl and kubemark $k8s_version (slow on a cold cache) ..." >&2
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubemark)

"$tmp/kubectl" version --client >&2
"$tmp/etcd" --version >&2

rm -rf "$dir"
mkdir -p "$dir"
mv "$tmp" "$bin"
chmod 755 "$bin"
trap - EXIT
printf 'kubernetes=%s\netcd=%s\ngo=%s\nbuild_seconds=%s\n' \
  "$k8s_version" "$etcd_version" "$go_version" "$((SECONDS - start))" >"$dir/versions"
touch "$dir/.complete"
echo "built in $((SECONDS - start))s: $bin" >&2
echo "$bin"
