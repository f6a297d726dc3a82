#!/usr/bin/env bash
# Builds the delegate job template as a qcow2 disk image for the qemu
# provider, from the same provisioning the Packer template runs
# (packer/scripts/provision.sh), without Packer and without a VM:
#
#   1. a Debian root made by debootstrap --variant=minbase (cached);
#   2. provision.sh run in it through chroot, as Packer runs it in a VM;
#   3. what a cloud image has and debootstrap does not: udev, DHCP on the
#      first network interface (systemd-networkd), an fstab, a host name,
#      and this machine's kernel modules (the image boots this machine's
#      kernel);
#   4. an ext4 file system made from the root (mkfs.ext4 -d), converted to
#      qcow2.
#
# The image has no boot loader: the qemu provider boots it with this
# machine's kernel and initrd (DELEGATE_QEMU_IMAGE_BOOT=kernel, which passes
# root=/dev/vda). Its own systemd then starts delegate-guest through the
# template's units, which find the job's bootstrap in QEMU's fw_cfg.
#
#   tests/packer/build-image.sh OUTPUT.qcow2
#
# An OUTPUT whose inputs (this script, packer/files, provision.sh, the
# guest binary, the suite, the kernel release) are unchanged is kept as it
# is. Runs as root on Debian; needs debootstrap, e2fsprogs, qemu-utils and
# kmod, and the Debian mirror.
#
# Environment:
#   DELEGATE_GUEST_BIN     the delegate-guest to install (default: the
#                          repository's static musl build)
#   DELEGATE_IMAGE_KERNEL  the kernel image it boots with; its modules go in
#                          (default: the newest /boot/vmlinuz-*)
#   DELEGATE_IMAGE_SUITE   Debian suite (default bookworm)
#   DELEGATE_IMAGE_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   DELEGATE_IMAGE_CACHE   where the debootstrap root is kept between builds
#                          (default: target/template-image in the repository)
#   DELEGATE_IMAGE_SIZE    the file system's size (default 2G); a job's
#                          overlay may be larger (resources.disk), and
#                          delegate-growroot grows the file system to it
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PACKER_DIR=$REPO/packer
SUITE=${DELEGATE_IMAGE_SUITE:-bookworm}
MIRROR=${DELEGATE_IMAGE_MIRROR:-http://deb.debian.org/debian}
CACHE=${DELEGATE_IMAGE_CACHE:-$REPO/target/template-image}
SIZE=${DELEGATE_IMAGE_SIZE:-2G}
GUEST_BIN=${DELEGATE_GUEST_BIN:-$REPO/target/x86_64-unknown-linux-musl/release/delegate-guest}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
  printf 'build-image: error: %s\n' "$*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: $0 OUTPUT.qcow2"
OUT=$1
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot)"
for tool in debootstrap mkfs.ext4 qemu-img depmod chroot sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install debootstrap e2fsprogs qemu-utils kmod)"
done
[ -x "$GUEST_BIN" ] || die "$GUEST_BIN is missing: cargo build --release -p delegate-guest --target x86_64-unknown-linux-musl, or set DELEGATE_GUEST_BIN"

KERNEL=${DELEGATE_IMAGE_KERNEL:-$(find /boot -maxdepth 1 -name 'vmlinuz-*' -readable | sort -V | tail -n 1)}
if [ -z "$KERNEL" ] || [ ! -r "$KERNEL" ]; then
  die "no readable kernel (set DELEGATE_IMAGE_KERNEL)"
fi
RELEASE=${KERNEL##*/vmlinuz-}
MODULES=/lib/modules/$RELEASE
[ -f "$MODULES/modules.dep" ] || die "$MODULES has no modules.dep: install the modules of kernel $RELEASE"

# Everything the image is made of: when none of it changed, neither did
# the image.
key=$(
  {
    echo "$SUITE $MIRROR $RELEASE $SIZE"
    sha256sum "$0" "$PACKER_DIR/scripts/provision.sh" "$GUEST_BIN" | cut -d' ' -f1
    find "$PACKER_DIR/files" -type f -print0 | sort -z | xargs -0 sha256sum | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
)
if [ -f "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$key" ]; then
  log "$OUT is up to date"
  exit 0
fi

mkdir -p "$CACHE"
BASE=$CACHE/base-$SUITE
ROOT=$CACHE/root
RAW=$CACHE/root.ext4

# Unmounts what was mounted in the root, deepest first.
unmount_root() {
  local m
  awk -v r="$ROOT/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m"
    done
}
trap unmount_root EXIT

start=$SECONDS
if [ ! -f "$BASE/.complete" ]; then
  log "debootstrap $SUITE into $BASE"
  rm -rf --one-file-system "$BASE"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,kmod,ca-certificates \
    "$SUITE" "$BASE" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
    tail -n 30 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  }
  touch "$BASE/.complete"
  log "debootstrap: $((SECONDS - start)) s"
else
  log "reusing the debootstrap root $BASE"
fi

start=$SECONDS
unmount_root
rm -rf --one-file-system "$ROOT"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.complete"

in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# No daemon may start inside the root while it is provisioned.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# What Packer's file provisioners upload, then the provisioning itself.
staging=$ROOT/tmp/delegate-staging
mkdir -p "$staging"
cp -a "$PACKER_DIR/files/." "$staging/"
cp "$GUEST_BIN" "$staging/delegate-guest"
cp "$PACKER_DIR/scripts/provision.sh" "$ROOT/tmp/provision.sh"
# Node.js and Claude Code come from outside Debian's mirror; script jobs
# need neither.
in_root DELEGATE_SKIP_NETWORK_INSTALLS=1 sh /tmp/provision.sh >"$CACHE/provision.log" 2>&1 || {
  tail -n 40 "$CACHE/provision.log" >&2
  die "provision.sh failed (log: $CACHE/provision.log)"
}
rm -f "$ROOT/tmp/provision.sh" "$ROOT/usr/sbin/policy-rc.d"
log "provision.sh: $((SECONDS - start)) s"
unmount_root

# What a cloud image brings and a debootstrap root lacks.
echo delegate-template >"$ROOT/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 0\n' >"$ROOT/etc/fstab"
cat >"$ROOT/etc/systemd/network/10-delegate.network" <<'EOF'
# Written by tests/packer/build-image.sh: DHCP on the VM's network card.
[Match]
Type=ether

[Network]
DHCP=ipv4
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
: >"$ROOT/etc/resolv.conf"
# This machine's kernel modules, without the drivers a VM never has.
mkdir -p "$ROOT/lib/modules"
rm -rf "${ROOT:?}/lib/modules/$RELEASE"
tar -C /lib/modules --exclude="$RELEASE/kernel/sound" \
  --exclude="$RELEASE/kernel/drivers/gpu" --exclude="$RELEASE/kernel/drivers/media" \
  --exclude="$RELEASE/kernel/drivers/infiniband" --exclude="$RELEASE/kernel/drivers/net/wireless" \
  --exclude="$RELEASE/kernel/drivers/net/ethernet" --exclude="$RELEASE/kernel/drivers/staging" \
  --exclude="$RELEASE/kernel/drivers/iio" --exclude="$RELEASE/kernel/drivers/usb" \
  -cf - "$RELEASE" | tar -C "$ROOT/lib/modules" -xf -
depmod -b "$ROOT" "$RELEASE"

start=$SECONDS
rm -f "$RAW"
mkfs.ext4 -q -F -L delegate-root -d "$ROOT" "$RAW" "$SIZE"
qemu-img convert -f raw -O qcow2 "$RAW" "$OUT.tmp"
rm -f "$RAW"
mv "$OUT.tmp" "$OUT"
echo "$key" >"$OUT.key"
rm -rf --one-file-system "$ROOT"
log "image $OUT ($(du -h "$OUT" | cut -f1) on disk, $SIZE file system): $((SECONDS - start)) s"
