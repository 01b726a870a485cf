#!/usr/bin/env bash
# Idempotent set-up of everything Backstop needs on a fresh machine:
#   - Python virtual environment in .venv with the project (and its test extras) installed
#   - npm packages from the committed package-lock.json (solcjs, OpenZeppelin, Anvil, Ganache)
#   - a py-solc-x compatible `solc-v<version>` adapter over solcjs in .venv/solcx, and a .pth hook that makes
#     py-solc-x and brownie use per-checkout folders (scripts/toolchain/backstop_toolchain.py)
# Re-running it only redoes the steps whose inputs changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$ROOT"
STAMPS="$ROOT/.venv/.backstop-stamps"
log() { printf '[setup] %s\n' "$*" >&2; }

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating virtual environment (.venv)"
  "$PYTHON" -m venv .venv
fi
mkdir -p "$STAMPS"

py_inputs_hash="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$STAMPS/pip-$py_inputs_hash" ]; then
  log "installing Python packages (pyproject.toml, constraints.txt)"
  .venv/bin/python -m pip install --quiet --upgrade -c constraints.txt pip wheel
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  rm -f "$STAMPS"/pip-*
  touch "$STAMPS/pip-$py_inputs_hash"
fi

npm_inputs_hash="$(cat package.json package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$STAMPS/npm-$npm_inputs_hash" ] || [ ! -x node_modules/.bin/anvil ]; then
  log "installing npm packages (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  rm -f "$STAMPS"/npm-*
  touch "$STAMPS/npm-$npm_inputs_hash"
fi

# Per-checkout toolchain state (scripts/toolchain/backstop_toolchain.py): a .pth file makes every interpreter of
# this .venv use .venv/solcx as py-solc-x's compiler folder and .venv/brownie-home/.brownie as brownie's data
# folder, so that two clones on one machine never share a compiler adapter, a network config or a chain.
SITE_PACKAGES="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pth="$SITE_PACKAGES/backstop_toolchain.pth"
# (guarded: in a working tree checked out at a commit without the module the venv still starts, unhooked)
wanted_pth="$ROOT/scripts/toolchain
import importlib.util as _u; _u.find_spec('backstop_toolchain') and __import__('backstop_toolchain').activate()"
if [ ! -f "$pth" ] || [ "$(cat "$pth")" != "$wanted_pth" ]; then
  log "installing the per-checkout toolchain hook at $pth"
  printf '%s\n' "$wanted_pth" > "$pth"
fi

# py-solc-x finds compilers as <install folder>/solc-v<version>; brownie then compiles normally.
SOLC_VERSION="$(node -p "require('./node_modules/solc/package.json').version")"
SOLCX_DIR="$ROOT/.venv/solcx"
seen="$(.venv/bin/python -c 'import solcx; print(solcx.get_solcx_install_folder())')"
[ "$seen" = "$SOLCX_DIR" ] || { echo "py-solc-x looks for compilers in $seen, not $SOLCX_DIR (is $pth read?)" >&2; exit 1; }
mkdir -p "$SOLCX_DIR"
adapter="$SOLCX_DIR/solc-v$SOLC_VERSION"
wanted="#!/bin/sh
exec node \"$ROOT/scripts/toolchain/solc_adapter.js\" \"\$@\""
if [ ! -x "$adapter" ] || [ "$(cat "$adapter")" != "$wanted" ]; then
  log "installing solc $SOLC_VERSION adapter over solcjs at $adapter"
  printf '%s\n' "$wanted" > "$adapter"
  chmod +x "$adapter"
fi
"$adapter" --version | grep -q "Version: $SOLC_VERSION" || { echo "solc adapter does not answer --version" >&2; exit 1; }
