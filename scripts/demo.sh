#!/usr/bin/env bash
# README command one: build the measured-boot base image, write the sample workload with
# update-disk, boot it locally (QEMU + OVMF + swtpm), fetch the golden measurement, print a
# summary, stop the VM. Usage: scripts/demo.sh [path/to/cvm-cli]   (cvm-agent next to it)
set -euo pipefail
cli=$(realpath "${1:-.build/release/cvm-cli}")
workload=${WORKLOAD:-workload}
vm=${DEMO_VM:-demo}
port=${DEMO_PORT:-8000}
work=_artifacts/demo
mkdir -p "$work"
start=$(date +%s)

echo "== cvm-cli image build --output images/base.raw"
"$cli" image build --output images/base.raw
echo "== cvm-cli update-disk images/base.raw --workload $workload --output $work/disk.raw"
"$cli" update-disk images/base.raw --workload "$workload" --output "$work/disk.raw" --force

"$cli" cleanup local --vm_name "$vm" >/dev/null 2>&1 || true
trap '"$cli" cleanup local --vm_name "$vm" >/dev/null 2>&1 || true' EXIT
echo "== cvm-cli deploy-local --disk $work/disk.raw --vm_name $vm --port $port --detach"
"$cli" deploy-local --disk "$work/disk.raw" --vm_name "$vm" --port "$port" --detach
http=$(sed -n 's/.*"agent_http_url" : "\(.*\)".*/\1/p' "_artifacts/local_$vm.json")

echo "== curl $http/golden-measurement"
curl -sS --max-time 30 "$http/golden-measurement" > "$work/golden-measurement.json"
"$cli" workload measure "$workload" --json > "$work/host-measurement.json"
python3 - "$work/golden-measurement.json" "$work/host-measurement.json" "https://127.0.0.1:$port" <<'PY'
import json, sys
g = json.load(open(sys.argv[1])); h = json.load(open(sys.argv[2]))
pcrs = g["pcrs"]["sha256"]
print("== summary")
print(f"agent          {sys.argv[3]}  (agent {g['agent_version']}, tee {g['tee']})")
print(f"TLS            {g.get('tls_fingerprint', '-')}")
for i in ("0", "4", "7", "9", "11", "23"):
    print(f"PCR {i:>2}         {pcrs[i]}")
host = h.get("pcr23") or h.get("pcr_23")
print(f"workload       {len(g['workload_events'])} events; PCR 23 predicted on the host {host}")
print("               " + ("MATCHES the guest's PCR 23" if host == pcrs["23"] else "DIFFERS from the guest's PCR 23"))
sys.exit(0 if host == pcrs["23"] else 1)
PY
echo "== cvm-cli cleanup local --vm_name $vm"
"$cli" cleanup local --vm_name "$vm"
trap - EXIT
echo "done in $(( $(date +%s) - start )) s"
