#!/bin/sh
# Prepares the pinned kernel (kernel.env) for vmexec: downloads the Debian
# package once, extracts it (no install), runs depmod, and builds a small
# initramfs (busybox-static, the virtio/9p/overlay modules, init). Everything
# lives in the cache directory ($NATTRACE_KERNEL_CACHE, default
# /var/cache/nattrace-kernels), outside the repository. Idempotent; prints the
# directory. Needs root on Debian: apt-get installs qemu-system-x86 and
# busybox-static when they are missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/kernel.env"
cache=${NATTRACE_KERNEL_CACHE:-/var/cache/nattrace-kernels}
dir="$cache/$KERNEL_PKG-$KERNEL_VERSION"
# The stamp names the contents of init and this script, not their paths: a
# clone elsewhere reuses the cache.
stamp="$dir/.ready-$(cat "$here/init" "$here/prepare.sh" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "$dir"
  exit 0
fi
# go test runs packages in parallel, each through vmexec: one prepares, the
# others wait for it and find the stamp.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$stamp" ]; then
  echo "$dir"
  exit 0
fi
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root || need="$need busybox-static"
if [ -n "$need" ]; then
  echo "installing:$need" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
mkdir -p "$dir"
cd "$dir"
deb="${KERNEL_PKG}_${KERNEL_VERSION}_amd64.deb"
if [ ! -f "$deb" ]; then
  echo "downloading $KERNEL_PKG=$KERNEL_VERSION" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download "$KERNEL_PKG=$KERNEL_VERSION" 2>/dev/null) || {
    echo "cannot download $KERNEL_PKG=$KERNEL_VERSION: run apt-get update, or pin the current version in $here/kernel.env" >&2
    rm -rf "$tmp"; exit 1; }
  mv "$tmp/$deb" .
  rm -rf "$tmp"
fi
rm -rf root initramfs initramfs.cpio.gz
mkdir root
dpkg-deb -x "$deb" root
depmod -b root "$KERNEL_RELEASE"
# The initramfs: busybox with relative links, the modules the 9p root needs.
mods="root/lib/modules/$KERNEL_RELEASE"
mkdir -p initramfs/bin initramfs/modules initramfs/proc initramfs/sys initramfs/dev initramfs/newroot
cp /bin/busybox initramfs/bin/busybox
for app in $(/bin/busybox --list); do
  [ "$app" = busybox ] || ln -sf busybox "initramfs/bin/$app"
done
: > initramfs/modules/order
for m in virtio_pci 9pnet_virtio 9p overlay; do
  for dep in $(awk -v m="/$m.ko:" 'index($0, m) { sub(":", ""); for (i = NF; i >= 1; i--) print $i }' "$mods/modules.dep"); do
    name=$(basename "$dep")
    if ! grep -qx "$name" initramfs/modules/order; then
      cp "$mods/$dep" initramfs/modules/
      echo "$name" >> initramfs/modules/order
    fi
  done
done
cp "$here/init" initramfs/init
chmod +x initramfs/init
(cd initramfs && find . | /bin/busybox cpio -o -H newc > ../initramfs.cpio)
gzip -1 -f initramfs.cpio
[ -s initramfs.cpio.gz ] || { echo "building the initramfs failed" >&2; exit 1; }
rm -f .ready-*
touch "$stamp"
echo "$dir"
