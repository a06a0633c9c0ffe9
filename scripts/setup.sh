#!/usr/bin/env bash
# One-command setup of a development machine (Debian bookworm, run as root):
# Debian packages, the Python virtualenv in .venv with Temper installed editable, BCC made
# importable from it, the Go-built control plane and the sched_ext VM rig in the cache
# directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

echo "== Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# python3-bpfcc: BCC for the BPF observation programs; python3-venv: the virtualenv;
# linux-headers-<arch>: headers BCC compiles those programs against. They read only tracepoint
# arguments, so Debian's headers serve any running kernel (the agent merges the split halves).
# memcached: the latency-critical service of the colocation benchmark and its smoke test.
# gcc: builds the benchmark's C load generator and filler (the smoke test skips without it).
# chromium, chromium-driver: headless Chromium and its WebDriver for the plane's web UI tests.
apt-get install -y -q --no-install-recommends python3-bpfcc python3-venv memcached gcc \
  chromium chromium-driver "linux-headers-$(dpkg --print-architecture)" >/dev/null
# The Debian package starts a system memcached on port 11211; the benchmark starts its own.
systemctl disable --now memcached >/dev/null 2>&1 || true

echo "== tracefs (BCC tracepoints, /trace captures)"
if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing ||
    echo "warning: cannot mount tracefs; BPF observation and trace tests will fail" >&2
fi

echo "== Python virtualenv (.venv)"
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is required"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'

echo "== BCC in the virtualenv"
# Link only Debian's bcc package into the venv, not the rest of /usr/lib/python3/dist-packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
.venv/bin/python -c 'import bcc' || { echo "error: bcc is not importable from .venv" >&2; exit 1; }

echo "== control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, helm)"
scripts/build-control-plane.sh

echo "== sched_ext VM rig (kernel, virtme-ng, QEMU, scx_layered)"
# The VM tests of scripts/test.sh boot it; cached, so a second run takes seconds.
scripts/vm-rig.sh
echo "setup complete: run scripts/test.sh"
