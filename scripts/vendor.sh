#!/usr/bin/env bash
# Re-vendor the browser libraries into static/vendor/ from the npm registry (no CDN at run time:
# agents' intranets may have no internet). Versions are pinned here and recorded in
# static/vendor/VERSIONS; the files are committed, so `make run` needs no npm.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(
  "socket.io-client@4.8.4 dist/socket.io.min.js socket.io.min.js"
  "chart.js@4.5.1 dist/chart.umd.min.js chart.umd.min.js"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > static/vendor/VERSIONS
for entry in "${PACKAGES[@]}"; do
  read -r spec src dest <<<"$entry"
  (cd "$tmp" && npm pack "$spec" --silent >/dev/null && mkdir -p x && tar xzf ./*.tgz -C x && rm ./*.tgz)
  cp "$tmp/x/package/$src" "static/vendor/$dest"
  license=$(node -e "console.log(require('$tmp/x/package/package.json').license)")
  echo "$spec -> static/vendor/$dest (license $license)" >> static/vendor/VERSIONS
  rm -rf "$tmp/x"
done
cat static/vendor/VERSIONS
