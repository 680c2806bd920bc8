#!/usr/bin/env bash
# Prepares a Debian bookworm machine (a GPU is not needed) to build and test polylora; safe to run again.
#   - Vulkan for Dawn in Node: Mesa >= 24 lavapipe (mesa-vulkan-drivers from bookworm-backports; bookworm's own
#     Mesa 22.3 is refused by Dawn). The Vulkan loader finds it by itself: VK_ICD_FILENAMES is not needed.
#   - Chromium for the browser test project (WebGPU on SwiftShader, started by Playwright from /usr/bin/chromium).
#   - node_modules from package-lock.json (`npm ci`) when missing or older than the lock file.
# As root it installs what is missing with apt-get; otherwise it prints the commands to run and exits 1.
#
# Usage: scripts/setup.sh [--check]
#   --check  only report what is present and what is missing; change nothing; exit 1 if anything is missing.
# Environment (defaults in brackets; the last three exist to test this script without touching the machine):
#   POLYLORA_CHROMIUM         the Chromium binary [/usr/bin/chromium] (vitest.config.ts reads it too)
#   POLYLORA_LVP_ICD          lavapipe's Vulkan ICD file [/usr/share/vulkan/icd.d/lvp_icd.json]
#   POLYLORA_APT_ETC          apt's configuration folder, where the backports source is written [/etc/apt]
#   POLYLORA_SETUP_DRY_RUN=1  print the apt-get and npm commands instead of running them
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM=${POLYLORA_CHROMIUM:-/usr/bin/chromium}
LVP_ICD=${POLYLORA_LVP_ICD:-/usr/share/vulkan/icd.d/lvp_icd.json}
APT_ETC=${POLYLORA_APT_ETC:-/etc/apt}
BACKPORTS_FILE=$APT_ETC/sources.list.d/bookworm-backports.sources
MESA_MIN=24
NODE_MIN=20
CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  '') ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

say() { echo "setup: $*"; }

# Runs a command that changes the machine, or prints it under POLYLORA_SETUP_DRY_RUN=1.
run() {
  if [[ ${POLYLORA_SETUP_DRY_RUN:-0} == 1 ]]; then
    echo "+ $*"
  else
    "$@"
  fi
}

# --- Node.js (not installed by this script: bookworm's nodejs is 18) ---------------------------------------------
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < NODE_MIN )) || ! command -v npm >/dev/null; then
  say "Node.js >= $NODE_MIN with npm is required (found: $(node --version 2>/dev/null || echo none))."
  say "install it from https://nodejs.org or NodeSource (https://deb.nodesource.com, node_20.x or newer), then run this again"
  exit 1
fi

# --- system packages ------------------------------------------------------------------------------------------
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
mesa_ok() {
  [[ -f $LVP_ICD ]] || return 1
  # Without dpkg (not Debian) the ICD file is all there is to check.
  command -v dpkg >/dev/null || return 0
  [[ -n $mesa_version ]] && dpkg --compare-versions "$mesa_version" ge "$MESA_MIN~"
}
chromium_ok() { [[ -x $CHROMIUM ]]; }

need_mesa=0
need_chromium=0
if mesa_ok; then
  say "ok: lavapipe ($LVP_ICD, mesa-vulkan-drivers ${mesa_version:-not from dpkg})"
else
  say "missing: lavapipe from Mesa >= $MESA_MIN ($LVP_ICD; mesa-vulkan-drivers ${mesa_version:-not installed})"
  need_mesa=1
fi
if chromium_ok; then
  say "ok: chromium ($CHROMIUM)"
else
  say "missing: chromium ($CHROMIUM)"
  need_chromium=1
fi

# True when some apt source already names bookworm-backports (one-line .list or deb822 .sources files).
has_backports() {
  grep -Eqs '^[^#]*\bbookworm-backports\b' "$APT_ETC/sources.list" "$APT_ETC"/sources.list.d/*.list \
    "$APT_ETC"/sources.list.d/*.sources
}

BACKPORTS_SOURCE='Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'

if (( need_mesa || need_chromium )); then
  add_backports=0
  (( need_mesa )) && ! has_backports && add_backports=1
  
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  if [[ $codename != bookworm ]]; then
    say "this is not Debian bookworm (VERSION_CODENAME=${codename:-unknown}); install by hand:"
    (( need_mesa )) && say "  - a Vulkan driver Dawn accepts (on a machine without a GPU: Mesa >= $MESA_MIN lavapipe)"
    (( need_chromium )) && say "  - Chromium >= 113 at $CHROMIUM (or set POLYLORA_CHROMIUM)"
    exit 1
  fi
  if (( CHECK_ONLY || EUID != 0 )); then
    if (( CHECK_ONLY )); then say "would run:"; else say "not root: run this as root, then run this script again:"; fi
    if (( add_backports )); then
      echo "cat > $BACKPORTS_FILE <<'EOF'"
      echo "$BACKPORTS_SOURCE"
      echo "EOF"
    fi
    echo "apt-get update"
    (( need_mesa )) && echo "apt-get install -y -t bookworm-backports mesa-vulkan-drivers"
    (( need_chromium )) && echo "apt-get install -y chromium"
    exit 1
  fi

  export DEBIAN_FRONTEND=noninteractive
  if (( add_backports )); then
    say "adding bookworm-backports: $BACKPORTS_FILE"
    mkdir -p "$APT_ETC/sources.list.d"
    echo "$BACKPORTS_SOURCE" > "$BACKPORTS_FILE"
  fi
  run apt-get update
  if (( need_mesa )); then run apt-get install -y -t bookworm-backports mesa-vulkan-drivers; fi
  if (( need_chromium )); then run apt-get install -y chromium; fi
  if [[ ${POLYLORA_SETUP_DRY_RUN:-0} != 1 ]]; then
    mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
    mesa_ok || { say "mesa-vulkan-drivers ${mesa_version:-?} installed, but no $LVP_ICD from Mesa >= $MESA_MIN"; exit 1; }
    chromium_ok || { say "chromium installed, but $CHROMIUM is still missing"; exit 1; }
    say "installed: mesa-vulkan-drivers $mesa_version, $("$CHROMIUM" --version 2>/dev/null)"
  fi
fi

# --- npm packages ---------------------------------------------------------------------------------------------
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  if (( CHECK_ONLY )); then
    say "missing: node_modules up to date with package-lock.json; would run: npm ci"
    exit 1
  fi
  say "installing npm packages (npm ci)"
  run npm ci --no-audit --no-fund
else
  say "ok: node_modules (newer than package-lock.json)"
fi
say "ready: node $(node --version)"
