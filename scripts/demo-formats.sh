#!/usr/bin/env bash
# The disk-format demo (make demo-formats): build a small GPT disk shaped like the
# confidential base images (ESP, root, ext4 "data"), take it through every cloud format with
# cvm-cli and back (checking the round trip byte for byte), then write the sample workload into
# each cloud format's data partition with update-disk.
set -euo pipefail
cli=$(realpath "${1:-.build/release/cvm-cli}")
workload=$(realpath "${WORKLOAD:-workload}")
work=${DEMO_DIR:-_artifacts/demo}
rm -rf "$work"; mkdir -p "$work"; cd "$work"

echo "== building a 1 GiB sample disk (sgdisk + mke2fs; test tools, not cvm-cli dependencies)"
truncate -s 1G disk.raw
sgdisk --clear -n1:1M:+64M -t1:ef00 -c1:esp -n2:65M:+256M -t2:8304 -c2:root \
       -n3:321M:0 -t3:8300 -c3:data disk.raw >/dev/null
head -c 48M /dev/urandom | dd of=disk.raw bs=1M seek=65 conv=notrunc status=none
mkdir -p tree/workload/config
printf 'services:\n  app:\n    image: docker.io/library/nginx:1.27\n    ports: ["80:80"]\n' > tree/workload/docker-compose.yml
truncate -s 700M data.img
mke2fs -q -F -t ext4 -L data -d tree data.img
dd if=data.img of=disk.raw bs=1M seek=321 conv=notrunc,sparse status=none
rm -rf tree data.img

echo "== cvm-cli inspect disk.raw"
"$cli" inspect disk.raw
for out in azure_disk.vhd aws_disk.vmdk gcp_disk.tar.gz; do
  echo "== cvm-cli convert disk.raw $out"
  "$cli" convert disk.raw "$out" --force
  "$cli" inspect "$out" | head -3
  "$cli" convert "$out" "back-$out.raw" --force >/dev/null
  # tar.gz rounds up to a whole GiB; the sample is exactly 1 GiB, so all round trips are exact.
  cmp disk.raw "back-$out.raw" && echo "   round trip $out -> raw: identical"
done

echo "== cvm-cli workload check $workload"
"$cli" workload check "$workload"
for disk in aws_disk.vmdk gcp_disk.tar.gz azure_disk.vhd; do
  echo "== cvm-cli update-disk $disk --workload $workload"
  "$cli" update-disk "$disk" --workload "$workload"
done
echo "== the three updated disks hold the same virtual disk:"
for disk in aws_disk.vmdk gcp_disk.tar.gz azure_disk.vhd; do
  "$cli" convert "$disk" "updated-$disk.raw" --force --json >/dev/null
  sha256sum "updated-$disk.raw"
done
ls -ls
