#!/usr/bin/env bash
# Start (or replace) a throwaway Debian host with systemd as PID 1, for the demo and the benchmark.
# Usage: tools/test-host.sh NAME [HOST_PORT]   publishes the host's port 8000 on 127.0.0.1:HOST_PORT
#        tools/test-host.sh NAME host          shares the machine's network (the benchmark: no
#                                              proxy between the load generator and the app)
# The container options are the ones Molecule uses (.config/molecule/config.yml); a fast test
# keeps the two in step.
set -euo pipefail

name=${1:?usage: tools/test-host.sh NAME [HOST_PORT]}
port=${2:-8000}
here=$(cd "$(dirname "$0")" && pwd)
image=$("$here/test-image.sh" 12 | tail -n 1)

if [ "$port" = host ]; then
  network=(--network host)
  where="the machine's network"
else
  network=(--publish "127.0.0.1:$port:8000/tcp")
  where="port 8000 on 127.0.0.1:$port"
fi

docker rm -f "$name" >/dev/null 2>&1 || true
docker run --detach --name "$name" --hostname "$name" \
  --cap-add SYS_ADMIN \
  --security-opt seccomp=unconfined \
  --security-opt apparmor=unconfined \
  --cgroupns host \
  --volume /sys/fs/cgroup:/sys/fs/cgroup:rw \
  --tmpfs /run \
  --tmpfs /run/lock \
  --env container=docker \
  "${network[@]}" \
  "$image" /lib/systemd/systemd >/dev/null

for _ in $(seq 1 60); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  case "$state" in
    running|degraded) echo "test-host: $name is up (systemd: $state), $where"; exit 0 ;;
  esac
  sleep 1
done
echo "test-host: systemd in $name did not finish booting (state: ${state:-unknown})" >&2
exit 1
