#!/usr/bin/env bash
# Write a minimal root filesystem into DIR: a static busybox with a link per applet in /bin,
# /etc/passwd and /etc/group (root, nobody), /tmp (1777), /root, and /lib, /lib64 pointing into
# /usr as on a merged-/usr Debian (so host libraries added later land where the loader looks).
#
# Usage: rootfs.sh DIR [BUSYBOX]     BUSYBOX defaults to `command -v busybox`; it must be static.
# Used by scripts/setup_docker.sh for the busybox, pause and vllm-cpu test images.
set -euo pipefail

dir="${1:?usage: rootfs.sh DIR [BUSYBOX]}"
busybox="${2:-$(command -v busybox || true)}"

if [[ -z "$busybox" || ! -x "$busybox" ]]; then
    echo "rootfs.sh: no busybox found; install Debian's busybox-static" >&2
    exit 2
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "rootfs.sh: $busybox is dynamically linked; install Debian's busybox-static" >&2
    exit 2
fi

mkdir -p "$dir"/{bin,etc,proc,sys,dev,root,usr/lib/x86_64-linux-gnu,usr/lib64,usr/bin}
chmod 0755 "$dir"
chmod 0755 "$dir/root"  # a pyenv interpreter under /root must stay usable by any run_as_user
install -d -m 1777 "$dir/tmp"
install -m 0755 "$busybox" "$dir/bin/busybox"
while read -r applet; do
    [[ "$applet" == busybox || -e "$dir/bin/$applet" ]] || ln -s busybox "$dir/bin/$applet"
done < <("$busybox" --list)
ln -sfn usr/lib "$dir/lib"
ln -sfn usr/lib64 "$dir/lib64"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
