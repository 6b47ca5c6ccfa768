import DiskImage
import Foundation

/// The shell scripts of the image (busybox sh): the initramfs's /init, which verifies and
/// mounts the root, and the root's /sbin/init, which brings up the network and the agent.
enum BootScripts {
    /// GPT partition names (for people and `update-disk`; the initramfs goes by type GUID).
    static let rootName = "root"
    static let verityName = "root-verity"
    static let dataName = "data"
    /// Where the root keeps the firewall's kernel modules and their load order.
    static let firewallModules = "lib/modules/firewall"
    /// Where the initramfs keeps the partition finder (sourced by /init).
    static let partitionFinderPath = "lib/cvm/partitions.sh"

    /// A type GUID as the 32 hex digits of its on-disk bytes (what od prints for the entry).
    static func onDiskHex(_ guid: String) -> String {
        (guidBytes(guid) ?? []).map { String(format: "%02x", $0) }.joined()
    }

    /// Finds root, verity and data by GPT partition type (Discoverable Partitions
    /// Specification), reading each disk's GPT with od: busybox has no blkid that shows types.
    /// `find_partitions` sets root, hash and data (kernel names such as vda2) and returns 0;
    /// 1 when a type is missing (the caller may wait for more disks), 2 when the layout is
    /// ambiguous or inconsistent; `why` says what is wrong. SYS and DEV default to /sys and /dev.
    static let partitionFinder = """
    # cvm: partitions by GPT type GUID (sourced by /init).
    ROOT_TYPE=\(onDiskHex(ImageBuilder.PartitionType.rootX86_64))
    VERITY_TYPE=\(onDiskHex(ImageBuilder.PartitionType.rootX86_64Verity))
    DATA_TYPE=\(onDiskHex(ImageBuilder.PartitionType.linuxData))
    ROOT_NAME="root-x86-64 (\(ImageBuilder.PartitionType.rootX86_64.lowercased()))"
    VERITY_NAME="root-x86-64-verity (\(ImageBuilder.PartitionType.rootX86_64Verity.lowercased()))"
    DATA_NAME="Linux data (\(ImageBuilder.PartitionType.linuxData.lowercased()))"
    """ + #"""

    : "${SYS:=/sys}" "${DEV:=/dev}"
    gpt_hex() { od -A n -t x1 -v -j "$2" -N "$3" "$1" | tr -d ' \n'; }
    gpt_num() { set -- $(od -A n -t "u$3" -j "$2" -N "$3" "$1"); echo "${1:-0}"; }
    # One line per GPT partition of every disk: "disk partition type-hex".
    gpt_partitions() {
        for d in "$SYS"/block/*; do
            disk="${d##*/}"
            case "$disk" in loop*|ram*|dm-*|sr*|zram*) continue ;; esac
            [ -e "$DEV/$disk" ] || continue
            ss=$(cat "$d/queue/logical_block_size" 2>/dev/null || echo 512)
            [ "$(gpt_hex "$DEV/$disk" "$ss" 8)" = 4546492050415254 ] || continue   # "EFI PART"
            elba=$(gpt_num "$DEV/$disk" $((ss + 72)) 8)
            esize=$(gpt_num "$DEV/$disk" $((ss + 84)) 4)
            for p in "$d/$disk"*; do
                [ -f "$p/partition" ] || continue
                n=$(cat "$p/partition")
                off=$((elba * ss + (n - 1) * esize))
                first=$(gpt_num "$DEV/$disk" $((off + 32)) 8)
                if [ $((first * ss / 512)) != "$(cat "$p/start")" ]; then
                    echo "$disk ${p##*/} mismatch"
                    continue
                fi
                echo "$disk ${p##*/} $(gpt_hex "$DEV/$disk" "$off" 16)"
            done
        done
    }
    # Partitions of type $1 (on disk $2 if given), space-separated.
    gpt_by_type() { echo "$parts" | while read -r d p t; do [ "$t" = "$1" ] && { [ -z "$2" ] || [ "$d" = "$2" ]; } && printf '%s ' "$p"; done; }
    gpt_count() { set -- $1; echo $#; }
    find_partitions() {
        parts=$(gpt_partitions)
        bad=$(echo "$parts" | while read -r d p t; do [ "$t" = mismatch ] && printf '%s ' "$p"; done)
        if [ -n "$bad" ]; then why="the GPT read from the disk does not match the partitions the kernel found (${bad% })"; return 2; fi
        roots=$(gpt_by_type "$ROOT_TYPE"); hashes=$(gpt_by_type "$VERITY_TYPE")
        for pair in "$roots|$ROOT_NAME" "$hashes|$VERITY_NAME"; do
            found="${pair%%|*}"
            if [ "$(gpt_count "$found")" -gt 1 ]; then why="$(gpt_count "$found") partitions of type ${pair#*|} (${found% }); expected exactly one"; return 2; fi
        done
        if [ -z "$roots" ]; then why="no partition of type $ROOT_NAME"; return 1; fi
        if [ -z "$hashes" ]; then why="no partition of type $VERITY_NAME"; return 1; fi
        root="${roots% }"; hash="${hashes% }"
        disk=$(echo "$parts" | while read -r d p t; do [ "$p" = "$root" ] && echo "$d"; done)
        if [ "$(echo "$parts" | while read -r d p t; do [ "$p" = "$hash" ] && echo "$d"; done)" != "$disk" ]; then
            why="the $VERITY_NAME partition $hash is not on the root's disk $disk"; return 2
        fi
        datas=$(gpt_by_type "$DATA_TYPE" "$disk")
        if [ "$(gpt_count "$datas")" -gt 1 ]; then why="$(gpt_count "$datas") partitions of type $DATA_NAME on $disk (${datas% }); expected exactly one"; return 2; fi
        if [ -z "$datas" ]; then why="no partition of type $DATA_NAME on $disk"; return 1; fi
        data="${datas% }"
        return 0
    }
    """#

    /// /init of the initramfs. Reads every block of the root through dm-verity before mounting
    /// it, so one flipped byte anywhere stops the boot (not just a later read), then powers off.
    static let initramfsInit = #"""
    #!/bin/sh
    # cvm initramfs: load modules, verify the root with dm-verity, mount root and data, switch.
    export PATH=/bin:/sbin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    say() { echo "cvm-initramfs: $*" > /dev/console; }
    refuse() {
        say "FATAL: $*"
        say "refusing to boot"
        sleep 1
        poweroff -f
    }
    for m in $(cat /lib/modules/load-order); do
        insmod "/lib/modules/$m" || refuse "cannot load kernel module $m"
    done
    roothash=""; salt=""; blocks=""
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            roothash=*) roothash="${arg#roothash=}" ;;
            cvm.verity_salt=*) salt="${arg#cvm.verity_salt=}" ;;
            cvm.verity_blocks=*) blocks="${arg#cvm.verity_blocks=}" ;;
        esac
    done
    [ -n "$roothash" ] && [ -n "$salt" ] && [ -n "$blocks" ] || refuse "the kernel command line lacks roothash=, cvm.verity_salt= or cvm.verity_blocks="
    # Partitions by GPT type GUID; disks may appear late, so a missing type is waited for.
    . /lib/cvm/partitions.sh
    i=0
    while :; do
        find_partitions; rc=$?
        [ $rc = 0 ] && break
        [ $rc = 2 ] && refuse "$why"
        i=$((i + 1)); [ $i -gt 100 ] && refuse "$why"
        sleep 0.1
    done
    say "root /dev/$root, verity /dev/$hash, data /dev/$data, roothash $roothash"
    # Version 1 table; hash start block 1 skips the veritysetup superblock kept in the partition.
    dmsetup create --noudevsync --readonly cvm-root \
        --table "0 $((blocks * 8)) verity 1 /dev/$root /dev/$hash 4096 4096 $blocks 1 sha256 $roothash $salt" \
        || refuse "dm-verity setup failed"
    dev=/dev/mapper/cvm-root
    [ -b "$dev" ] || dev=/dev/dm-0
    if ! cat "$dev" > /dev/null; then
        refuse "root partition /dev/$root does not match roothash $roothash (dm-verity found a modified block)"
    fi
    say "root verified"
    mkdir -p /sysroot
    mount -t squashfs -o ro "$dev" /sysroot || refuse "cannot mount the verified root"
    mount -t ext4 -o nodev,nosuid "/dev/$data" /sysroot/data || refuse "cannot mount the data partition /dev/$data"
    mount --move /dev /sysroot/dev
    mount --move /proc /sysroot/proc
    mount --move /sys /sysroot/sys
    exec switch_root /sysroot /sbin/init
    """#

    /// /sbin/init of the root: network for QEMU user networking (static 10.0.2.15), then the
    /// agent. If the agent stops, the VM powers off (the console says why).
    static let rootInit = #"""
    #!/bin/sh
    export PATH=/bin:/usr/bin
    say() { echo "cvm: $*" > /dev/console; }
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
    # The firewall's modules; without them the agent reports that no firewall is applied.
    for m in $(cat /lib/modules/firewall/load-order); do
        insmod "/lib/modules/firewall/$m" || say "cannot load kernel module $m: no firewall will be applied"
    done
    say "starting cvm-agent"
    /usr/bin/cvm-agent --workload /data/workload > /dev/console 2>&1
    say "cvm-agent exited with status $?; powering off"
    sleep 1
    poweroff -f
    """#
}
