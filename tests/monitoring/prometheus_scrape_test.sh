#!/usr/bin/env bash
# A real Prometheus server scrapes `vgpu monitor --listen` and we query it back.
# Usage: prometheus_scrape_test.sh PATH_TO_VGPU. Exits 77 (skipped) without prometheus or curl.
set -euo pipefail
vgpu=$1
command -v prometheus >/dev/null && command -v curl >/dev/null || { echo "prometheus or curl missing: skipped"; exit 77; }

work=$(mktemp -d)
cleanup() { kill "${monitor_pid:-}" "${prom_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
metrics_port=$(free_port)
prom_port=$(free_port)

VGPU_BACKEND=sim "$vgpu" monitor --listen "127.0.0.1:$metrics_port" --interval 0.2 >"$work/monitor.log" 2>&1 &
monitor_pid=$!
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: vgpu
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

query() { curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 60); do
  if query 'count(vgpu_gpu_memory_total_bytes{job="vgpu"})' 2>/dev/null | grep -q '"value":\[[0-9.]*,"8"\]'; then
    up=$(query 'up{job="vgpu"}')
    echo "$up" | grep -q '"value":\[[0-9.]*,"1"\]' || { echo "target not up: $up"; exit 1; }
    echo "prometheus scraped 8 GPUs from vgpu monitor"
    exit 0
  fi
  sleep 0.5
done
echo "prometheus never saw the vgpu metrics"; tail -20 "$work/prometheus.log"; tail -5 "$work/monitor.log"
exit 1
