#!/usr/bin/env bash
# cvm-cli update-disk against the peer path that does the same job with standard tools, per
# format (raw, VHD fixed, VMDK streamOptimized, GCP tar.gz), on the 4 GiB bench disk of
# bench/formats.sh (same GPT and data pattern) whose data partition (p3, ~1.75 GiB) holds an ext4
# with a pre-existing tree (~150 MiB) and an old workload/. The new workload is the sample
# workload plus a ~200 MiB image archive.
#
# Peer path: qemu-img convert to raw (tar.gz: pigz -d | tar -x), extract the partition (dd),
# debugfs rdump of the old tree, replace workload/, mke2fs -d a new file system (same UUID and
# label) into a zeroed partition file, write it back (hole punched, dd conv=sparse), convert to
# the format (qemu-img convert; tar.gz: tar -S -c | pigz).
#
# Usage: bench/update-disk.sh path/to/release/cvm-cli      (work files in bench/out/update/)
#        BENCH_RUNS=N for more runs of the long cases (VMDK, tar.gz; default 2, ~15 min in all)
# Targets: VMDK and tar.gz ≤ 0.5× the peer, raw and VHD ≤ 2 s, peak RSS ≤ 64 MiB.
# Exit status: 1 if an output of ours is wrong or a run fails; a missed target is only reported.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cli=$(realpath "${1:?usage: bench/update-disk.sh path/to/release/cvm-cli}")
out=${BENCH_OUT:-$here/out/update}
rss_limit_mib=64
for tool in qemu-img sgdisk mke2fs debugfs e2fsck tar pigz openssl fallocate /usr/bin/time "${SWIFTC:-swiftc}"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
mkdir -p "$out"
cd "$out"
start=$SECONDS
export SOURCE_DATE_EPOCH=1700000000
mib=$((1 << 20))

# ---- inputs --------------------------------------------------------------------------------
if [ ! -x gendisk ] || [ "$here/gendisk.swift" -nt gendisk ]; then
  "${SWIFTC:-swiftc}" -O "$here/gendisk.swift" -o gendisk
fi
# det_random <bytes> <seed>: deterministic incompressible bytes.
# (The generators end on SIGPIPE once head has enough: only head's status counts.)
det_random() { ( set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass "pass:$2" -pbkdf2 -in /dev/zero 2>/dev/null | head -c "$1" ); }
# det_text <bytes>: deterministic text-like bytes.
det_text() { ( set +o pipefail; yes 'GET /api/v1/attest 200 ok pcr sha256 workload measure info 1700000000' | head -c "$1" ); }

echo "== inputs in $out"
# BENCH_REUSE=1 keeps the inputs of an earlier run (they are deterministic).
reuse=""; [ -n "${BENCH_REUSE:-}" ] && [ -s disk.tar.gz ] && [ -s workload/app.tar ] && reuse=1
if [ -z "$reuse" ]; then
rm -f disk.raw disk.vhd disk.vmdk disk.tar.gz; truncate -s 4G disk.raw
sgdisk --clear --disk-guid=11111111-2222-3333-4444-555555555555 \
  -n1:1M:+256M -t1:ef00 -c1:esp -n2:257M:+2048M -t2:8304 -c2:root -n3:2305M:0 -t3:8300 -c3:data disk.raw >/dev/null
./gendisk disk.raw 42 >/dev/null
fi
read -r p3_start p3_end < <(sgdisk -i 3 disk.raw | awk '/First sector/ {f=$3} /Last sector/ {l=$3} END {print f, l}')
p3_off=$((p3_start * 512)); p3_size=$(((p3_end - p3_start + 1) * 512))
if [ -z "$reuse" ]; then
# The old data file system: a system-like tree and an old workload, over the punched partition.
rm -rf tree && mkdir -p tree/etc tree/var/lib/app tree/home/user tree/workload/config tree/opt/tool
echo base-image > tree/etc/hostname
det_text 2000000 > tree/var/log.txt
det_random $((60 * mib)) 1 > tree/var/lib/app/data.bin
det_random $((40 * mib)) 2 > tree/opt/tool/tool.bin
det_text $((48 * mib)) > tree/home/user/notes.txt
for i in $(seq 1 300); do echo "config $i" > "tree/etc/file$i.conf"; done
ln -s ../etc/hostname tree/home/user/hostname-link
chown -R 1000:1000 tree/home/user
det_text 100000 > tree/workload/docker-compose.yml
rm -f p3.fs; truncate -s "$p3_size" p3.fs
mke2fs -q -F -t ext4 -L data -U 0ddba11e-0000-4000-8000-000000000001 -E root_owner=0:0 -d tree p3.fs
debugfs -w -R 'ea_set /etc/hostname user.comment bench' p3.fs >/dev/null 2>&1
fallocate -p -o "$p3_off" -l "$p3_size" disk.raw
dd if=p3.fs of=disk.raw bs=1M oflag=seek_bytes seek="$p3_off" conv=notrunc,sparse status=none
rm -f p3.fs
# The new workload: the sample plus a docker-save archive of ~200 MiB (half random, half text).
rm -rf workload image.d && cp -a "$here/../workload" workload && mkdir image.d
echo '[{"Config":"config.json","RepoTags":["localhost/app:1"],"Layers":["layer1.tar","layer2.tar"]}]' > image.d/manifest.json
echo '{"architecture":"amd64","os":"linux"}' > image.d/config.json
det_random $((100 * mib)) 3 > image.d/layer1.tar
det_text $((100 * mib)) > image.d/layer2.tar
tar -cf workload/app.tar -C image.d manifest.json config.json layer1.tar layer2.tar
rm -rf image.d
"$cli" workload check workload >/dev/null
# The inputs in every format (untimed).
"$cli" convert disk.raw disk.vhd --force >/dev/null
"$cli" convert disk.raw disk.vmdk --force >/dev/null
"$cli" convert disk.raw disk.tar.gz --force >/dev/null
fi
echo "   disk.raw: 4 GiB, $(du -m disk.raw | cut -f1) MiB allocated; data partition $((p3_size / mib)) MiB at $((p3_off / mib)) MiB;" \
  "workload $(du -sm workload | cut -f1) MiB"

# ---- measuring -----------------------------------------------------------------------------
# The machine may be shared: each case keeps the best wall time of several runs, for ours and
# the peer alike (raw and VHD 3 runs, VMDK and tar.gz $BENCH_RUNS, default 2). Every run starts
# from a fresh copy of the input, made untimed; the peer ends with `sync <output>` because
# cvm-cli fsyncs its output before renaming it into place.
long_runs=${BENCH_RUNS:-2}
failures=0
# The peer path; $1 = format, input peer-in.<ext>, output peer-out.<ext>.
peer_update() {
  local fmt=$1 ext=$2 work=peer-work
  rm -rf "$work"; mkdir "$work"
  case $fmt in
    raw)    mv peer-in.raw "$work/disk.raw" ;;   # updated in place (not crash-safe, as cheap as it gets)
    tar.gz) pigz -dc "peer-in.$ext" | tar -xSf - -C "$work" ;;
    vhd)    qemu-img convert -f vpc -O raw "peer-in.$ext" "$work/disk.raw" ;;
    vmdk)   qemu-img convert -f vmdk -O raw "peer-in.$ext" "$work/disk.raw" ;;
  esac
  dd if="$work/disk.raw" of="$work/p3.fs" bs=1M iflag=skip_bytes,count_bytes skip="$p3_off" count="$p3_size" \
    conv=sparse status=none
  local uuid label
  uuid=$(dumpe2fs -h "$work/p3.fs" 2>/dev/null | awk -F': *' '/^Filesystem UUID/ {print $2}')
  label=$(dumpe2fs -h "$work/p3.fs" 2>/dev/null | awk -F': *' '/^Filesystem volume name/ {print $2}')
  mkdir "$work/tree"
  debugfs -R "rdump / $work/tree" "$work/p3.fs" >/dev/null 2>&1
  rm -rf "$work/tree/workload" "$work/tree/lost+found"
  cp -a workload "$work/tree/workload"
  chown -R 0:0 "$work/tree/workload"
  find "$work/tree/workload" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  rm -f "$work/p3.fs"; truncate -s "$p3_size" "$work/p3.fs"
  mke2fs -q -F -t ext4 -L "$label" -U "$uuid" -E root_owner=0:0 -d "$work/tree" "$work/p3.fs"
  fallocate -p -o "$p3_off" -l "$p3_size" "$work/disk.raw"
  dd if="$work/p3.fs" of="$work/disk.raw" bs=1M oflag=seek_bytes seek="$p3_off" conv=notrunc,sparse status=none
  case $fmt in
    raw)    mv "$work/disk.raw" "peer-out.raw" ;;
    tar.gz) tar -S -c -C "$work" disk.raw | pigz > "peer-out.$ext" ;;
    vhd)    qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$work/disk.raw" "peer-out.$ext" ;;
    vmdk)   qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/disk.raw" "peer-out.$ext" ;;
  esac
  sync "peer-out.$ext"
  rm -rf "$work"
}
export -f peer_update
export p3_off p3_size

# check_ours <ext>: our output, back to raw, has a clean data partition holding the workload,
# and the bytes outside the partition equal the input's.
check_ours() {
  local ext=$1 ok=0
  "$cli" convert "ours.$ext" check.raw --force >/dev/null || return 1
  dd if=check.raw of=check.fs bs=1M iflag=skip_bytes,count_bytes skip="$p3_off" count="$p3_size" conv=sparse status=none
  e2fsck -fn check.fs >check.log 2>&1 || ok=1
  debugfs -R 'dump /workload/app.tar check.tar' check.fs >/dev/null 2>&1
  cmp -s check.tar workload/app.tar || ok=1
  debugfs -R 'cat /etc/hostname' check.fs 2>/dev/null | grep -qx base-image || ok=1
  local a b
  set +o pipefail
  a=$(head -c "$p3_off" check.raw | sha256sum); b=$(head -c "$p3_off" disk.raw | sha256sum)
  [ "$a" = "$b" ] || ok=1
  a=$(tail -c +$((p3_off + p3_size + 1)) check.raw | head -c $((4 * 1024 * mib - p3_off - p3_size)) | sha256sum)
  b=$(tail -c +$((p3_off + p3_size + 1)) disk.raw | sha256sum)
  [ "$a" = "$b" ] || ok=1
  set -o pipefail
  rm -f check.raw check.fs check.tar
  return $ok
}

rows=()
for spec in "raw raw -" "vhd vhd -" "vmdk vmdk 0.5" "tar.gz tar.gz 0.5"; do
  read -r fmt ext max_ratio <<<"$spec"
  echo "== update-disk $fmt"
  [ "$max_ratio" = "-" ] && runs=3 || runs=$long_runs
  # Peer, on a fresh copy of the input each run.
  measure "$runs" "peer-$fmt" "rm -f peer-out.$ext; cp --sparse=always disk.$ext peer-in.$ext; cat peer-in.$ext workload/app.tar >/dev/null" \
    bash -c "peer_update $fmt $ext"; p=$secs
  rm -f "peer-in.$ext" "peer-out.$ext"
  # Ours, in place on a fresh copy of the input each run.
  measure "$runs" "ours-$fmt" "cp --sparse=always disk.$ext ours.$ext; cat ours.$ext workload/app.tar >/dev/null" \
    "$cli" update-disk "ours.$ext" --workload workload; o=$secs; m=$rss_mib
  if [ -n "$o" ]; then
    if check_ours "$ext"; then echo "   ok    our $fmt output"; else echo "   WRONG our $fmt output"; failures=$((failures + 1)); fi
  fi
  rm -f "ours.$ext"
  if [ -z "$o" ] || [ -z "$p" ]; then
    rows+=("$(printf '%-10s %8s %8s %7s %8s  %-30s %s' "$fmt" "${o:--}" "${p:--}" - "${m:--}" "" FAIL)")
    continue
  fi
  ratio=$(awk -v a="$o" -v b="$p" 'BEGIN { printf "%.2f", a / (b > 0.005 ? b : 0.005) }')
  if [ "$max_ratio" = "-" ]; then
    target="<=2 s, <=${rss_limit_mib} MiB"
    verdict=$(awk -v s="$o" -v m="$m" -v lim="$rss_limit_mib" 'BEGIN { print (s <= 2 && m <= lim) ? "PASS" : "MISS" }')
  else
    target="<=${max_ratio}x peer, <=${rss_limit_mib} MiB"
    verdict=$(awk -v r="$ratio" -v max="$max_ratio" -v m="$m" -v lim="$rss_limit_mib" \
      'BEGIN { print (r <= max && m <= lim) ? "PASS" : "MISS" }')
  fi
  rows+=("$(printf '%-10s %8.2f %8.2f %7s %8s  %-30s %s' "$fmt" "$o" "$p" "$ratio" "$m" "$target" "$verdict")")
done

{
  echo
  echo "cvm-cli update-disk vs qemu-img + debugfs rdump + mke2fs -d (+ tar|pigz) — $(nproc) cores, $(date -u +%Y-%m-%d)"
  echo "4 GiB disk, data partition $((p3_size / mib)) MiB, workload $(du -sm workload | cut -f1) MiB;" \
    "best of 3 runs (raw, VHD) or $long_runs (VMDK, tar.gz); the peer's time includes sync of its output"
  printf '%-10s %8s %8s %7s %8s  %-30s %s\n' format "ours s" "peer s" ratio "RSS MiB" target result
  printf '%s\n' "${rows[@]}"
  echo "total bench time: $((SECONDS - start)) s; failures (wrong output or failed run): $failures"
} | tee update-results.txt
[ "$failures" -eq 0 ]
