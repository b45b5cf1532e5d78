#!/usr/bin/env bash
# Refresh the vendored browser libraries in static/vendor/ from the npm registry.
#
# The versions are pinned in package.json and locked (with integrity hashes) in
# package-lock.json at the repository root. To upgrade: change the pin in package.json, run
# `scripts/vendor-js.sh --update-lock`, review the diff of static/vendor/, run the browser tests
# (`.venv/bin/pytest -m browser`), commit. Without --update-lock the lock file is used as it is
# (`npm ci`), so the same bytes come back. Nothing here runs in production: the platform serves
# the copied files; the browser fetches nothing from any CDN.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENDOR="$ROOT/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$ROOT/package.json" "$WORK/"
cd "$WORK"
if [[ "${1:-}" == "--update-lock" ]]; then
    npm install --ignore-scripts --no-audit --no-fund --package-lock-only
    cp package-lock.json "$ROOT/package-lock.json"
else
    cp "$ROOT/package-lock.json" "$WORK/"
fi
# The devDependencies (eslint, typescript) check static/js; nothing of them is vendored.
npm ci --ignore-scripts --no-audit --no-fund --omit=dev

version() { node -p "require('./node_modules/$1/package.json').version"; }

# @bjorn3/browser_wasi_shim: ES modules (dist/*.js), MIT OR Apache-2.0.
SHIM="$VENDOR/browser_wasi_shim"
rm -rf "$SHIM" && mkdir -p "$SHIM"
cp node_modules/@bjorn3/browser_wasi_shim/dist/*.js "$SHIM/"
# Its type declarations, beside the modules: `make typecheck` (tsc --checkJs over static/js)
# reads them instead of checking the vendored JavaScript itself.
cp node_modules/@bjorn3/browser_wasi_shim/typings/*.d.ts "$SHIM/"
cp node_modules/@bjorn3/browser_wasi_shim/LICENSE-MIT node_modules/@bjorn3/browser_wasi_shim/LICENSE-APACHE "$SHIM/"
echo "@bjorn3/browser_wasi_shim $(version @bjorn3/browser_wasi_shim)" > "$SHIM/VERSION"

# @msgpack/msgpack: ES modules (dist.esm/**/*.mjs), ISC.
MSGPACK="$VENDOR/msgpack"
rm -rf "$MSGPACK" && mkdir -p "$MSGPACK/utils"
cp node_modules/@msgpack/msgpack/dist.esm/*.mjs "$MSGPACK/"
cp node_modules/@msgpack/msgpack/dist.esm/utils/*.mjs "$MSGPACK/utils/"
# Source maps point at sources that are not vendored; drop the comments.
find "$MSGPACK" -name '*.mjs' -exec sed -i '/^\/\/# sourceMappingURL=/d' {} +
# Type declarations for `make typecheck` (see above); index.mjs is imported, so its types are
# looked up as index.d.mts.
cp node_modules/@msgpack/msgpack/dist.esm/*.d.ts "$MSGPACK/"
cp node_modules/@msgpack/msgpack/dist.esm/utils/*.d.ts "$MSGPACK/utils/"
echo 'export * from "./index.js";' > "$MSGPACK/index.d.mts"
cp node_modules/@msgpack/msgpack/LICENSE "$MSGPACK/"
echo "@msgpack/msgpack $(version @msgpack/msgpack)" > "$MSGPACK/VERSION"

# axe-core: the accessibility rules engine, MPL-2.0. Only the browser tests inject it
# (tests/browser/test_accessibility.py); no page of the platform loads it.
AXE="$VENDOR/axe-core"
rm -rf "$AXE" && mkdir -p "$AXE"
cp node_modules/axe-core/axe.min.js node_modules/axe-core/LICENSE "$AXE/"
echo "axe-core $(version axe-core)" > "$AXE/VERSION"

echo "vendored into $VENDOR:"
cat "$SHIM/VERSION" "$MSGPACK/VERSION" "$AXE/VERSION"
