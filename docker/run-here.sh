#!/bin/sh
# Start the built image's app where `podman run` fails (crun: setrlimit RLIMIT_NOFILE: Operation not permitted):
# chroot into the mounted image with a writable overlay on top (as `docker run` gives a container), as the image's
# user, with its environment, working directory and command from `podman image inspect`. Then check
# /_stcore/health, fetch / and open the Overview page in headless Chromium (when /usr/bin/chromium and
# .venv's Playwright are there), record the image size and the server's memory, stop the app and unmount.
# Run as root from anywhere, after docker/build-here.sh:   sh docker/run-here.sh    (PORT=8502 if 8501 is taken)
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-interp-workbench}
PORT=${PORT:-8501}
PODMAN="podman --cgroup-manager=cgroupfs"
OUT=${OUT:-/tmp/interp-run-here}
mkdir -p "$OUT"

if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
    echo "port $PORT is in use; run with PORT=<another port>" >&2
    exit 1
fi

image_mnt=$($PODMAN image mount "$IMAGE")
work=$(mktemp -d /tmp/interp-container.XXXXXX)
root=$work/root
mkdir -p "$work/upper" "$work/work" "$root"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    for m in "$root/dev/shm" "$root/dev" "$root/sys" "$root/proc" "$root"; do
        mountpoint -q "$m" && umount -l "$m"
    done
    rm -rf "$work"
    $PODMAN image unmount "$IMAGE" >/dev/null
}
trap cleanup EXIT INT TERM

# The container's writable layer: an overlay whose upper layer is thrown away afterwards.
mount -t overlay overlay -o "lowerdir=$image_mnt,upperdir=$work/upper,workdir=$work/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755,size=64k tmpfs "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/shm"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$root/dev/shm"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# What `docker run` would use: the image's User, Env, WorkingDir and Cmd (with HOME from the image's passwd).
user=$($PODMAN image inspect --format '{{.Config.User}}' "$IMAGE")
workdir=$($PODMAN image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")
uid=$(chroot "$root" id -u "${user:-root}")
gid=$(chroot "$root" id -g "${user:-root}")
home=$(chroot "$root" getent passwd "${user:-root}" | cut -d: -f6)
$PODMAN image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d' > "$work/env"
grep -q '^HOME=' "$work/env" || echo "HOME=$home" >> "$work/env"
echo "HOSTNAME=interp-workbench" >> "$work/env"
$PODMAN image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d' \
    | sed "s/^--server.port=8501\$/--server.port=$PORT/" > "$work/cmd"
echo "user $user ($uid:$gid), workdir $workdir, env:"; sed 's/^/    /' "$work/env"
echo "cmd: $(tr '\n' ' ' < "$work/cmd")"

# env -i: only the image's environment; env -C: its working directory; the command's argv one line each.
set --
while IFS= read -r line; do set -- "$@" "$line"; done < "$work/env"
while IFS= read -r line; do set -- "$@" "$line"; done < "$work/cmd"
nice -n 10 chroot --userspec="$uid:$gid" --groups="$gid" "$root" /usr/bin/env -i -C "$workdir" "$@" \
    > "$OUT/server.log" 2>&1 &
pid=$!
start=$(date +%s)

base="http://127.0.0.1:$PORT"
health=""
for _ in $(seq 1 180); do
    health=$(curl -fsS --max-time 2 "$base/_stcore/health" 2>/dev/null || true)
    [ -n "$health" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "the app exited:"; cat "$OUT/server.log"; exit 1; }
    sleep 1
done
echo "health after $(( $(date +%s) - start )) s: ${health:-no answer}"
[ "$health" = "ok" ] || { cat "$OUT/server.log"; exit 1; }
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %.0f MB  ", $1, $2 / 1024}' "/proc/$pid/status"; echo; }
echo "server (pid $pid, $(tr '\0' ' ' < "/proc/$pid/cmdline")) after start: $(rss)"

code=$(curl -sS -o "$OUT/index.html" -w '%{http_code}' "$base/")
echo "GET / -> HTTP $code, $(wc -c < "$OUT/index.html") bytes, title: $(sed -n 's:.*<title>\(.*\)</title>.*:\1:p' "$OUT/index.html")"

if [ -x /usr/bin/chromium ] && .venv/bin/python -c 'import playwright' 2>/dev/null; then
    BASE_URL=$base SHOT=$OUT/overview.png nice -n 10 .venv/bin/python docker/overview_check.py
    echo "server after the Overview page: $(rss)"
else
    echo "no /usr/bin/chromium or no Playwright in .venv: the page was only fetched with curl"
fi

echo "image size:"; $PODMAN image ls "$IMAGE"
echo "server log (last lines):"; tail -n 20 "$OUT/server.log" | sed 's/^/    /'
