#!/bin/sh
# Build the project's Dockerfile on a machine with no container registry and no `docker` (see docs/container.md):
#   1. podman and debootstrap from Debian's packages (skipped when installed);
#   2. a stand-in python:3.11-slim: a Debian bookworm rootfs from debootstrap, imported into podman, plus
#      docker/python-slim-standin.Containerfile (skipped when localhost/python:3.11-slim exists);
#   3. `podman build` of the unchanged Dockerfile, torch's CPU wheel taken from a wheel on disk when
#      download.pytorch.org cannot be reached, and the host's CA bundle lent to the build when the host trusts
#      local CAs (an HTTPS-intercepting proxy).
# Run as root from anywhere:  sh docker/build-here.sh      (TORCH_WHEEL=/path/to/torch-...whl to choose the wheel)
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-interp-workbench}
BASE=localhost/python:3.11-slim
ROOTFS_IMAGE=localhost/debian-bookworm-python:rootfs
NICE="nice -n 10"

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y podman debootstrap
fi
PODMAN="podman --cgroup-manager=cgroupfs"

if ! $PODMAN image exists "$BASE"; then
    if ! $PODMAN image exists "$ROOTFS_IMAGE"; then
        # apt's own Debian mirror (the only one reachable here), else deb.debian.org.
        mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
        mirror=${mirror:-http://deb.debian.org/debian}
        rootfs=$(mktemp -d /var/tmp/interp-rootfs.XXXXXX)
        trap 'rm -rf "$rootfs"' EXIT
        echo "== debootstrap bookworm from $mirror into $rootfs (a few minutes)"
        $NICE debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" "$mirror"
        tar -C "$rootfs" -c . | $PODMAN import - "$ROOTFS_IMAGE"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    echo "== stand-in $BASE"
    $NICE $PODMAN build --isolation=chroot --pull=never -t "$BASE" -f docker/python-slim-standin.Containerfile docker
fi

# torch: the Dockerfile's default is the PyTorch CPU index; where that host does not resolve, use a CPU wheel on
# disk (a file or folder given in TORCH_WHEEL, else the first torch-2.13.0+cpu cp311 wheel in pip's find-links).
torch_args=""
if ! curl -fsS -o /dev/null --max-time 15 https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    pin=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements.txt)
    wheel=${TORCH_WHEEL:-}
    if [ -z "$wheel" ]; then
        for dir in $(pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p") /opt/wheels; do
            found=$(ls "$dir"/torch-"$pin"+cpu-cp311-cp311-manylinux*_x86_64.whl 2>/dev/null | head -n 1 || true)
            if [ -n "$found" ]; then wheel=$found; break; fi
        done
    fi
    if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
        echo "download.pytorch.org cannot be reached and no torch-$pin+cpu cp311 wheel was found; set TORCH_WHEEL" >&2
        exit 1
    fi
    wheel=$(readlink -f "$wheel")
    echo "== download.pytorch.org cannot be reached: torch from $wheel"
    # The wheel's folder is a build volume (not in the build context, so not in any layer).
    torch_args="--volume $(dirname "$wheel"):/torch-wheel:ro --build-arg TORCH_WHEEL=/torch-wheel/$(basename "$wheel")"
fi

# Here HTTPS leaves through a proxy whose CA only the host's bundle has (pip in the build otherwise fails with
# CERTIFICATE_VERIFY_FAILED "self-signed certificate in certificate chain"): lend the build the host's bundle as a
# build volume, so it is not in the image.
ca_args=""
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1 && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    echo "== local CAs in /usr/local/share/ca-certificates: the build uses the host's /etc/ssl/certs/ca-certificates.crt"
    ca_args="--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
fi

echo "== podman build -t $IMAGE ."
# shellcheck disable=SC2086
$NICE $PODMAN build --isolation=chroot --pull=never $ca_args $torch_args -t "$IMAGE" .
$PODMAN image ls "$IMAGE"
