#!/usr/bin/env bash
# Install dropdoc and everything it needs on a Debian-based machine (run as root).
#   scripts/install.sh          the tool, in .venv/ of this checkout
#   scripts/install.sh --test   the tool plus the test dependencies
# System packages: iproute2 (ip, ss, tc, nstat; the lab), nftables and ethtool (firewall
# and NIC evidence), procps (sysctl), util-linux (setpriv, used by the no-root tests),
# python3-venv when the system Python lacks venv.
# With --test also: prometheus (its promtool runs the alert-rule unit tests; the server is
# scraped against `dropdoc serve` in a functional test) and chromium (renders the HTML report
# headless). Their daemons are not started by the install (policy-rc.d, see below).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (it installs system packages and the lab needs namespaces)" >&2
    exit 1
fi

packages=(iproute2 nftables ethtool procps util-linux)
[[ -n "$extras" ]] && packages+=(prometheus chromium)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    missing+=(python3 python3-venv)
    python=python3
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    echo "install.sh: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's prometheus package would start a server on 0.0.0.0:9090: forbid service starts
    # during this install unless the machine already has a policy.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"install.sh: dropdoc needs Python >= 3.11, found {sys.version.split()[0]}")
PY

# Reuse .venv only if it works: a half-made one (e.g. from `python3 -m venv` run before
# python3-venv was installed, or an interrupted run) has a python but no pip, and is remade.
.venv/bin/python -m pip --version >/dev/null 2>&1 || "$python" -m venv --clear .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
echo "install.sh: dropdoc installed: $(pwd)/.venv/bin/dropdoc ($(.venv/bin/dropdoc --version))"
