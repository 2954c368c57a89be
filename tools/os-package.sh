#!/usr/bin/env bash
# Install a Debian package when its command is missing; silent when it is there.
# Usage: tools/os-package.sh COMMAND [PACKAGE]   e.g. chromium (the browser tests), wrk (the benchmark)
set -euo pipefail

command=${1:?usage: tools/os-package.sh COMMAND [PACKAGE]}
package=${2:-$command}

if command -v "$command" >/dev/null 2>&1; then
  exit 0
fi

echo "os-package: installing $package from Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$package" >/dev/null
