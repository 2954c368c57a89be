#!/usr/bin/env bash
# Build the systemd test-host image from Debian packages when it is missing (no registry needed).
# Usage: tools/test-image.sh [DEBIAN_RELEASE]   (12 = bookworm, the default; 13 = trixie)
# Prints the image reference on its last line. Set ASGI_APP_TEST_IMAGE_12 (or _13) to use a
# published systemd image for that release instead; it is then taken as it is and nothing is built.
set -euo pipefail

release=${1:-12}
case "$release" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) echo "test-image: unknown Debian release '$release' (use 12 or 13)" >&2; exit 2 ;;
esac

published="ASGI_APP_TEST_IMAGE_$release"
if [ -n "${!published:-}" ]; then
  echo "${!published}"
  exit 0
fi

image="asgi-app-test/debian-systemd:$release"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

# debootstrap and Debian's archive keys (a Debian machine has the keys; an Ubuntu CI runner not).
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if ! command -v debootstrap >/dev/null 2>&1 || [ ! -f "$keyring" ]; then
  echo "test-image: installing debootstrap and debian-archive-keyring" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null; }
fi

rootfs=$(mktemp -d /var/tmp/asgi-app-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "test-image: debootstrap $suite into $rootfs (about a minute)" >&2
debootstrap --variant=minbase --keyring="$keyring" \
  --include=systemd,systemd-sysv,dbus,python3,ca-certificates,iproute2,procps \
  "$suite" "$rootfs" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# A container has no consoles or hardware clock to wait for.
for unit in getty.target systemd-timesyncd.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  - "$image" >/dev/null
echo "test-image: built $image" >&2
echo "$image"
