#!/usr/bin/env bash
# The README's first command (make demo): a throwaway systemd host, the example app deployed
# onto it with playbooks/deploy.yml, then what a client sees.
set -euo pipefail
cd "$(dirname "$0")/.."

host=asgi-app-demo
port=${DEMO_PORT:-8000}

tools/test-host.sh "$host" "$port"
ansible-playbook -i inventories/demo tools/prepare-test-host.yml
time ansible-playbook -i inventories/demo playbooks/deploy.yml

echo
echo "== What a client sees at http://127.0.0.1:$port"
PYTHONPATH=tools python -m probes report "http://127.0.0.1:$port"
echo
echo "== What runs on $host"
docker exec "$host" systemctl --no-pager --lines 0 status demo.socket | sed -n '1,3p;/Listen/p'
docker exec "$host" systemctl --no-pager --lines 0 status demo.service | sed -n '1,3p;/CGroup/,$p'
docker exec "$host" sh -c 'journalctl -u demo.service -o cat --no-pager | grep -m1 "Using worker"'
docker exec "$host" sh -c 'grep -E "^(workers|# [0-9]+ usable|# [a-z]+ rule)" /etc/demo/gunicorn_config.py'
cat <<EOT

The app answers at http://127.0.0.1:$port (open / in a browser; try /health, /client, /sse, ws://127.0.0.1:$port/ws).
Look inside:  docker exec -it $host bash    (journalctl -u demo, systemctl status demo)
Remove it:    make clean-demo
EOT
