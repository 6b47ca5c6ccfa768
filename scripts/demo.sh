#!/usr/bin/env bash
# README command one: build the measured-boot base image, write the sample workload with
# update-disk, predict its PCRs without booting, boot it locally (QEMU + OVMF + swtpm), fetch the
# golden measurement over pinned TLS, verify a fresh TPM quote against the prediction, stop the VM. Usage: scripts/demo.sh [path/to/cvm-cli]   (cvm-agent next to it)
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

echo "== cvm-cli golden predict $work/disk.raw   (before booting: what the VM must show)"
"$cli" golden predict "$work/disk.raw" -o "$work/predicted.json" --force

"$cli" cleanup local --vm_name "$vm" >/dev/null 2>&1 || true
trap '"$cli" cleanup local --vm_name "$vm" >/dev/null 2>&1 || true' EXIT
echo "== cvm-cli deploy-local --disk $work/disk.raw --vm_name $vm --port $port --detach"
"$cli" deploy-local --disk "$work/disk.raw" --vm_name "$vm" --port "$port" --detach

echo "== cvm-cli golden fetch $vm   (TLS pinned on first use, recorded in _artifacts/)"
"$cli" golden fetch "$vm" -o "$work/golden-measurement.json" --force
nonce=$(openssl rand -hex 32)
echo "== cvm-cli collaterals $vm --nonce <fresh>   (a TPM quote bound to the nonce and the TLS key)"
"$cli" collaterals "$vm" --nonce "$nonce" -o "$work/collaterals.json" --force 2>/dev/null
echo "== cvm-cli verify collaterals.json predicted.json   (quote, event log, every PCR vs the prediction)"
"$cli" verify "$work/collaterals.json" "$work/predicted.json" --nonce "$nonce"
echo "== cvm-cli verify collaterals.json golden-measurement.json"
"$cli" verify "$work/collaterals.json" "$work/golden-measurement.json" --nonce "$nonce" | tail -n 1
echo "== cvm-cli cleanup local --vm_name $vm"
"$cli" cleanup local --vm_name "$vm"
trap - EXIT
echo "done in $(( $(date +%s) - start )) s"
