#!/usr/bin/env bash
# Prepare the sched_ext virtual machine rig that the `vm` tests boot (Debian bookworm, as root).
#
# The host kernel has no CONFIG_SCHED_CLASS_EXT, so the tests boot Debian's trixie-backports
# kernel under QEMU with virtme-ng (vng), which shares the host filesystem with the guest over
# 9p. This script gathers everything into ${TEMPER_CACHE_DIR:-$HOME/.cache/temper}/vm:
#
#   kernels/<version>/root/   the unpacked kernel package (boot/vmlinuz-<version>, modules)
#   scx/bin/scx_layered       scx_layered built from crates.io
#   rig.json                  the paths the test rig reads (tests/vm/rig.py)
#
# Run it again at any time: steps whose results are present are skipped, so a second run takes
# seconds. The kernel package is only downloaded and unpacked, never installed on the host,
# and apt runs against a private sources list, state and cache, so the host's apt setup stays
# untouched. Set TEMPER_VM_REFRESH_KERNEL=1 to look for a newer 6.18 kernel package, or
# TEMPER_VM_KERNEL_PACKAGE=<name> to pick one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TEMPER_CACHE_DIR:-$HOME/.cache/temper}/vm
scx_version=1.1.2
kernel_series=6.18
suite=trixie-backports
mkdir -p "$cache"

fail() {
    echo "error: $*" >&2
    exit 1
}

echo "== host packages"
# qemu-system-x86 runs the VM. vng builds its initramfs with busybox-static, reads the kernel
# version with file, and kmod provides depmod. The rest is what the scx_layered build needs.
host_packages=(qemu-system-x86 busybox-static kmod file clang-19 gcc make pkg-config libelf-dev zlib1g-dev)
missing=()
for package in "${host_packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== scx_layered $scx_version (build in the background)"
scx_bin=$cache/scx/bin/scx_layered
scx_log=$cache/scx-build.log
scx_pid=
if [ -x "$scx_bin" ] && "$scx_bin" --version 2>/dev/null | grep -q "$scx_version"; then
    echo "present: $scx_bin"
else
    command -v cargo >/dev/null || fail "cargo not found on PATH: install Rust with rustup first"
    # A neutral working directory keeps rustup from reading a rust-toolchain file. The kept
    # target directory makes a rebuild incremental.
    (
        cd /
        BPF_CLANG=clang-19 LIBCLANG_PATH=/usr/lib/llvm-19/lib \
            CARGO_TARGET_DIR=$cache/scx-target \
            cargo install --locked scx_layered --version "$scx_version" --root "$cache/scx"
    ) >"$scx_log" 2>&1 &
    scx_pid=$!
    echo "building (pid $scx_pid, log $scx_log): a cold build took 6 minutes on 2 cores"
fi

echo "== virtme-ng in .venv"
if [ ! -x "$repo/.venv/bin/vng" ]; then
    "$repo/.venv/bin/pip" install -q virtme-ng
fi
"$repo/.venv/bin/vng" --version

echo "== sched_ext kernel from $suite"
kernel_dir=
if [ -z "${TEMPER_VM_REFRESH_KERNEL:-}" ] && [ -z "${TEMPER_VM_KERNEL_PACKAGE:-}" ] \
    && [ -f "$cache/rig.json" ]; then
    kernel_dir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["kernel_dir"])' \
        "$cache/rig.json")
    [ -d "$kernel_dir" ] || kernel_dir=
fi
if [ -n "$kernel_dir" ]; then
    echo "present: $kernel_dir"
else
    # Use the Debian mirror this machine already uses: the first .../debian URI that is not
    # the security archive.
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -vE '^[[:space:]]*#' \
        | grep -oE '(https?|ftp)://[^ ]+/debian/?( |$)' | grep -v security | head -n1 \
        | tr -d ' ' | sed 's:/$::' || true)
    [ -n "$mirror" ] || fail "no Debian mirror (an URI ending in /debian) in /etc/apt/sources.list*;" \
        "add the machine's Debian mirror there first"
    echo "mirror: $mirror"
    apt_dir=$cache/apt
    mkdir -p "$apt_dir/etc/sources.list.d" "$apt_dir/etc/preferences.d" \
        "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/download"
    : >"$apt_dir/state/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        >"$apt_dir/etc/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
        -o "Dir::State=$apt_dir/state"
        -o "Dir::State::status=$apt_dir/state/status"
        -o "Dir::Cache=$apt_dir/cache"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
    )
    apt-get "${apt_opts[@]}" -q update >/dev/null
    package=${TEMPER_VM_KERNEL_PACKAGE:-}
    if [ -z "$package" ]; then
        series_re=${kernel_series//./\\.}
        package=$(apt-cache "${apt_opts[@]}" pkgnames linux-image- \
            | grep -E "^linux-image-${series_re}\.[0-9]+\+deb13(\.[0-9]+)?-amd64$" \
            | sort -V | tail -n1 || true)
        [ -n "$package" ] || fail "no linux-image-$kernel_series.*-amd64 package in $suite at" \
            "$mirror; set TEMPER_VM_KERNEL_PACKAGE to one that exists"
    fi
    echo "package: $package"
    (cd "$apt_dir/download" && apt-get "${apt_opts[@]}" -q download "$package" >/dev/null)
    deb=$(ls -t "$apt_dir/download/${package}_"*.deb | head -n1)
    version=${package#linux-image-}
    kernel_dir=$cache/kernels/$version
    rm -rf "$kernel_dir.partial"
    mkdir -p "$kernel_dir.partial/root"
    dpkg-deb -x "$deb" "$kernel_dir.partial/root"
    root=$kernel_dir.partial/root
    config=$root/boot/config-$version
    [ -f "$config" ] || fail "$deb has no boot/config-$version; pick another package"
    for option in CONFIG_SCHED_CLASS_EXT CONFIG_DEBUG_INFO_BTF CONFIG_BPF_SYSCALL; do
        grep -qx "$option=y" "$config" || fail "$package is built without $option=y" \
            "($config); sched_ext needs it: pick a kernel package that has it"
    done
    [ -f "$root/boot/vmlinuz-$version" ] || fail "$deb has no boot/vmlinuz-$version"
    # vng looks for the modules in <root>/lib/modules/<version> next to the image, but trixie's
    # packages ship them under usr/lib/modules.
    if [ ! -e "$root/lib/modules" ] && [ -d "$root/usr/lib/modules" ]; then
        mkdir -p "$root/lib"
        ln -s ../usr/lib/modules "$root/lib/modules"
    fi
    [ -d "$root/lib/modules/$version" ] || fail "$deb has no modules for $version"
    depmod -a -b "$root" "$version"
    rm -rf "$kernel_dir"
    mv "$kernel_dir.partial" "$kernel_dir"
    # depmod ran against the .partial path, which is fine because modules.dep and the other
    # files it writes contain paths relative to the modules directory.
fi
version=$(basename "$kernel_dir")
kernel_image=$kernel_dir/root/boot/vmlinuz-$version
echo "kernel: $kernel_image"

if [ -n "$scx_pid" ]; then
    echo "== waiting for the scx_layered build (pid $scx_pid)"
    if ! wait "$scx_pid"; then
        echo "error: cargo install scx_layered $scx_version failed; last lines of $scx_log:" >&2
        tail -n 40 "$scx_log" >&2
        exit 1
    fi
fi
"$scx_bin" --version

python3 - "$cache/rig.json" "$kernel_dir" "$kernel_image" \
    "$kernel_dir/root/boot/config-$version" "$version" "$scx_bin" "$repo/.venv/bin/vng" <<'EOF'
import json
import sys

keys = ["kernel_dir", "kernel_image", "kernel_config", "kernel_version", "scx_layered", "vng"]
with open(sys.argv[1], "w") as manifest:
    json.dump(dict(zip(keys, sys.argv[2:], strict=True)), manifest, indent=2)
    manifest.write("\n")
EOF
echo "rig ready: $cache/rig.json"
