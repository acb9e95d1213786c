#!/usr/bin/env bash
# Builds llava-train and runs its tests against LibTorch 2.x: Debian trixie's libtorch-dev (2.6),
# inside a cached trixie chroot, while the host keeps Debian 12's LibTorch 1.13.
#
#   sudo scripts/check-libtorch2.sh [extra ctest arguments, e.g. -R Safetensors]
#
# The first run bootstraps the chroot (debootstrap + apt, ~4 min; needs a Debian mirror); later runs
# reuse it, and reuse its build folder and ccache, so they cost a configure + incremental build + ctest.
# The repository and ../shared are bind-mounted read-only; nothing is written to the repository.
# Exits with ctest's status (or the failing phase's status). Needs root (debootstrap, chroot, mount).
#
# Environment:
#   LLAVA_LT2_CHROOT   chroot folder (default: /var/cache/llava-train/libtorch2-chroot as root, else
#                      ~/.cache/llava-train/libtorch2-chroot; outside the clone so CI reuses it). It also holds the build
#                      folder (/llava/build) and the ccache (/llava/ccache). Delete it to start afresh.
#                      CI that builds fresh clones should point this at a persistent path.
#   LLAVA_LT2_TARGETS  build only these targets, e.g. "test_base64 test_safetensors" (default: all);
#                      ctest then runs only the tests of what was built.
#   LLAVA_LT2_JOBS     parallel compile/test jobs (default: nproc)
#   LLAVA_LT2_SUITE    Debian suite (default: trixie);  LLAVA_LT2_MIRROR (default: http://deb.debian.org/debian)
#   LLAVA_SHARED_DIR   fixtures folder on the host (default: ../shared beside the repository)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $(id -u) -eq 0 ]]; then DEFAULT_CACHE=/var/cache/llava-train; else DEFAULT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/llava-train; fi
CHROOT=${LLAVA_LT2_CHROOT:-$DEFAULT_CACHE/libtorch2-chroot}
SUITE=${LLAVA_LT2_SUITE:-trixie}
MIRROR=${LLAVA_LT2_MIRROR:-http://deb.debian.org/debian}
TARGETS=${LLAVA_LT2_TARGETS:-}
JOBS=${LLAVA_LT2_JOBS:-$(nproc)}
SHARED=${LLAVA_SHARED_DIR:-$REPO/../shared}

# What the project needs to build and test (as scripts/setup.sh, but LibTorch is trixie's 2.x).
PACKAGES=(
  libtorch-dev libgloo-dev libopenblas0-pthread
  libsentencepiece-dev libstb-dev libturbojpeg0-dev libpng-dev libwebp-dev libtiff-dev libgif-dev
  libpcre2-dev libutf8proc-dev libsimdjson-dev
  nlohmann-json3-dev libcxxopts-dev libspdlog-dev libyaml-cpp-dev libgtest-dev
  cmake g++ make pkg-config ccache
)

# Paths inside the chroot.
SRC_IN=/llava/src          # the repository, read-only
SHARED_IN=/llava/shared    # ../shared, read-only (an empty folder when the host has none: tests skip)
BUILD_IN=/llava/build      # build folder, persists in the chroot
CCACHE_IN=/llava/ccache    # compiler cache, persists in the chroot

BASE_STAMP=$CHROOT/.llava-lt2-base       # debootstrap finished; holds the suite
PKG_STAMP=$CHROOT/.llava-lt2-packages    # apt-get install finished; holds the package list

log() { printf '[lt2 %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'check-libtorch2: %s\n' "$*" >&2; exit 1; }

# --- Phase timings, printed at exit (also on failure) ---------------------------------------------
PHASES=()
phase_start() { PHASE_NAME=$1; PHASE_T0=$(date +%s.%N); log "== $1"; }
phase_end() {
  local dt; dt=$(awk -v a="$PHASE_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  PHASES+=("$(printf '%-22s %7ss' "$PHASE_NAME" "$dt")")
  PHASE_NAME=
}

# --- Mounts: tracked, and undone at exit in reverse order ------------------------------------------
MOUNTS=()
do_mount() {  # do_mount TARGET mount-args...
  mkdir -p "$1"
  local target=$1; shift
  mount "$@" "$target"
  MOUNTS+=("$target")
}
bind_ro() {   # bind_ro SRC TARGET
  do_mount "$2" --bind "$1"
  mount -o remount,bind,ro "$2"
}
# Every mount point at or below the chroot, deepest first (from /proc/mounts, so stale ones count too).
mounts_under_chroot() {
  awk -v root="$CHROOT" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r
}
unmount_all() {
  local m i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  MOUNTS=()
  # Anything left (a killed earlier run, debootstrap's own /proc): unmount too.
  for m in $(mounts_under_chroot); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}

# Processes whose root is the chroot: only a SIGKILLed earlier run leaves any (its build job).
chroot_pids() {
  local p
  for p in /proc/[0-9]*; do
    if [[ "$(readlink "$p/root" 2>/dev/null)" == "$CHROOT" ]]; then echo "${p#/proc/}"; fi
  done
}
stop_chroot_processes() {
  local pids i
  pids=$(chroot_pids)
  [[ -n "$pids" ]] || return 0
  log "stopping $(wc -w <<< "$pids") leftover process(es) in the chroot from an earlier run"
  # TERM first: make then deletes the half-written files it was building; KILL what is left after 10 s.
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    pids=$(chroot_pids)
    [[ -n "$pids" ]] || return 0
    sleep 0.5
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 1
}

# shellcheck disable=SC2317  # called through the EXIT trap
on_exit() {
  local rc=$?
  exec 1>&"$OUT_FD" 2>&"$ERR_FD"   # a signal may land while stdout is redirected into a log
  if [[ -n "$CHILD" ]]; then   # interrupted: stop the build/test running in the chroot first
    kill -TERM -- "-$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  [[ -n "${PHASE_NAME:-}" ]] && phase_end
  unmount_all
  if [[ -n "$(mounts_under_chroot)" ]]; then
    echo "check-libtorch2: WARNING: still mounted under $CHROOT:" >&2; mounts_under_chroot >&2
  fi
  if (( ${#PHASES[@]} )); then
    echo "---- check-libtorch2 timings ----"
    printf '  %s\n' "${PHASES[@]}"
    [[ -n "${TORCH_LINE:-}" ]] && echo "  ${TORCH_LINE}"
    echo "  exit status: $rc"
  fi
  exit "$rc"
}

# Long commands run as a background job in their own process group (set -m) while we wait, so that
# INT/TERM reach our traps at once and on_exit can stop the whole job before unmounting.
set -m
CHILD=
run_child() {
  local rc=0
  # The job must not hold our lock (a SIGKILLed run would keep it locked) nor our saved fds.
  "$@" 9>&- {OUT_FD}>&- {ERR_FD}>&- &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}

# Runs a command inside the chroot with a clean environment.
in_chroot() {
  run_child chroot "$CHROOT" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive \
    CCACHE_DIR="$CCACHE_IN" CCACHE_MAXSIZE=5G \
    LLAVA_SHARED_DIR="$SHARED_IN" \
    "$@"
}

# ---------------------------------------------------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
  echo "check-libtorch2: needs root (debootstrap, chroot and bind mounts). Run:" >&2
  echo "  sudo $0${*:+ $*}" >&2
  exit 1
fi
[[ "$CHROOT" == /* && "$CHROOT" != *[[:space:]]* && "$CHROOT" != / ]] \
  || die "LLAVA_LT2_CHROOT must be an absolute path without spaces (got '$CHROOT')"

mkdir -p "$(dirname "$CHROOT")"
# One run at a time per chroot (CI and a developer may overlap): the second waits.
exec 9>"$CHROOT.lock"
if ! flock -n 9; then
  log "another check-libtorch2 run holds $CHROOT.lock; waiting"
  flock 9
fi
exec {OUT_FD}>&1 {ERR_FD}>&2   # the script's own stdout/stderr, for on_exit
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Leftovers of a SIGKILLed run (we hold the lock, so nothing else uses this chroot): its orphaned
# build, then its mounts.
stop_chroot_processes
unmount_all

# --- 1. The chroot: debootstrap once, then apt-get whenever the package list changes --------------
if [[ "$(cat "$BASE_STAMP" 2>/dev/null)" != "$SUITE" ]]; then
  phase_start "chroot creation"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on the host"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  # An unfinished chroot is redone from scratch. Never delete through a mount (the repository is
  # bind-mounted in there during runs): refuse if anything is still mounted, and stay on this filesystem.
  [[ -z "$(mounts_under_chroot)" ]] || die "refusing to delete $CHROOT: still mounted: $(mounts_under_chroot | xargs)"
  rm -rf --one-file-system "$CHROOT"
  mkdir -p "$CHROOT"
  log "debootstrap --variant=minbase $SUITE $CHROOT $MIRROR"
  if ! run_child debootstrap --variant=minbase "$SUITE" "$CHROOT" "$MIRROR" > "$CHROOT.debootstrap.log" 2>&1; then
    tail -n 15 "$CHROOT.debootstrap.log" >&2 || true
    die "debootstrap of Debian $SUITE from $MIRROR failed (no network or mirror unreachable?). Full log: $CHROOT.debootstrap.log"
  fi
  unmount_all   # debootstrap may leave its /proc mounted
  # apt inside: no recommends, retries; dpkg: skip docs/man/locales (smaller, faster); no daemons.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Retries "3";\n' \
    > "$CHROOT/etc/apt/apt.conf.d/99llava"
  printf 'path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n' \
    > "$CHROOT/etc/dpkg/dpkg.cfg.d/99llava-nodoc"
  printf '#!/bin/sh\nexit 101\n' > "$CHROOT/usr/sbin/policy-rc.d" && chmod +x "$CHROOT/usr/sbin/policy-rc.d"
  echo "$SUITE" > "$BASE_STAMP"
  phase_end
fi

if [[ "$(cat "$PKG_STAMP" 2>/dev/null)" != "${PACKAGES[*]}" ]]; then
  phase_start "package install"
  rm -f "$PKG_STAMP"
  cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf"
  do_mount "$CHROOT/proc" -t proc proc
  do_mount "$CHROOT/dev" --bind /dev
  in_chroot apt-get update -qq || die "apt-get update in the $SUITE chroot failed (no network?)"
  missing=()
  for p in "${PACKAGES[@]}"; do
    in_chroot apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  (( ${#missing[@]} == 0 )) || die "not in Debian $SUITE: ${missing[*]}"
  log "apt-get install ${PACKAGES[*]}"
  in_chroot apt-get install -y -qq "${PACKAGES[@]}" > "$CHROOT.apt.log" 2>&1 \
    || { tail -n 20 "$CHROOT.apt.log" >&2; die "apt-get install in the chroot failed. Full log: $CHROOT.apt.log"; }
  in_chroot apt-get clean
  unmount_all
  echo "${PACKAGES[*]}" > "$PKG_STAMP"
  phase_end
fi

# --- 2. Mounts for the build: repository and fixtures read-only, /proc, /dev, /sys -----------------
phase_start "mount"
do_mount "$CHROOT/proc" -t proc proc
do_mount "$CHROOT/dev" --bind /dev
do_mount "$CHROOT/dev/shm" -t tmpfs -o mode=1777 shm
bind_ro /sys "$CHROOT/sys"
bind_ro "$REPO" "$CHROOT$SRC_IN"
if [[ -d "$SHARED" ]]; then
  bind_ro "$(cd "$SHARED" && pwd)" "$CHROOT$SHARED_IN"
else
  log "no fixtures at $SHARED: fixture tests will skip"
  mkdir -p "$CHROOT$SHARED_IN"
fi
mkdir -p "$CHROOT$BUILD_IN" "$CHROOT$CCACHE_IN"
phase_end

# --- 3. Configure, build, test inside the chroot ---------------------------------------------------
phase_start "configure"
in_chroot bash -o pipefail -c 'cmake "$@" 2>&1 | tee /llava/configure.log' configure \
  -S "$SRC_IN" -B "$BUILD_IN" -DCMAKE_BUILD_TYPE=Release -DLLAVA_SHARED_DIR="$SHARED_IN"
TORCH_LINE=$(grep -o 'llava-train: LibTorch.*' "$CHROOT/llava/configure.log" || true)
log "${TORCH_LINE:-llava-train: LibTorch version line not found in the configure output}"
phase_end

phase_start "build"
build_args=(--build "$BUILD_IN" -j"$JOBS")
if [[ -n "$TARGETS" ]]; then
  read -r -a target_list <<< "$TARGETS"
  build_args+=(--target "${target_list[@]}")
fi
# -k: keep going past a failing file, so one run shows every compile error against this LibTorch;
# a failed build still runs the tests of what did build (the unbuilt show as <target>_NOT_BUILT).
build_rc=0
in_chroot nice -n 10 cmake "${build_args[@]}" -- -k || build_rc=$?
phase_end
(( build_rc == 0 )) || log "BUILD FAILED (status $build_rc): running the tests of what did build anyway"

phase_start "ctest"
ctest_args=(--test-dir "$BUILD_IN" --output-on-failure -j"$JOBS")
# With only some targets built, the others' tests show up as <target>_NOT_BUILT: leave them out.
if [[ -n "$TARGETS" ]]; then ctest_args+=(-E '_NOT_BUILT$'); fi
ctest_rc=0
in_chroot nice -n 10 ctest "${ctest_args[@]}" "$@" || ctest_rc=$?
phase_end
(( build_rc == 0 )) || { log "build failed (status $build_rc)"; exit "$build_rc"; }
exit "$ctest_rc"
