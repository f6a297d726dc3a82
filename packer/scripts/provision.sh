#!/bin/sh
# Turns a minimal Debian (12, 13) or Ubuntu (22.04, 24.04) system into a
# delegate job template. Shared by every Packer source (proxmox-clone,
# proxmox-iso, qemu) and run for real by tests/packer/check.sh in a
# debootstrap root.
#
# Runs as root. Idempotent: running it twice gives the same system.
# Works in a booted VM and in a chroot (no systemd running): units are then
# enabled offline and nothing is started.
#
# Inputs (environment):
#   DELEGATE_STAGING               dir with delegate-guest, systemd/, libexec/
#                                  (uploaded by Packer's file provisioner)
#                                  default /tmp/delegate-staging
#   DELEGATE_JOB_USER              user the runner runs jobs as (default delegate)
#   DELEGATE_SKIP_NETWORK_INSTALLS 1 skips Node.js and Claude Code, the steps
#                                  that need more than the distribution's
#                                  mirror (for offline checks); default 0
#   DELEGATE_NODE_VERSION          Node.js major ("22") or exact ("22.11.0")
#   DELEGATE_NODE_DIST_URL         Node.js download base (https://nodejs.org/dist)
#   DELEGATE_CLAUDE_CODE_VERSION   npm version of @anthropic-ai/claude-code (latest)
#   DELEGATE_QGA_BLOCK_RPCS        guest-agent commands to block, comma-separated
#                                  (default guest-exec,guest-exec-status; may be
#                                  empty; file-open/write/close may not be blocked)
#   DELEGATE_EXTRA_PACKAGES        more apt packages, space-separated
#   DELEGATE_BUILD_USER            the login Packer used; locked at the end
#   DELEGATE_KEEP_STAGING          1 keeps the staging dir (default: removed)
set -eu

STAGING=${DELEGATE_STAGING:-/tmp/delegate-staging}
JOB_USER=${DELEGATE_JOB_USER:-delegate}
SKIP_NETWORK=${DELEGATE_SKIP_NETWORK_INSTALLS:-0}
NODE_VERSION=${DELEGATE_NODE_VERSION:-22}
NODE_DIST_URL=${DELEGATE_NODE_DIST_URL:-https://nodejs.org/dist}
CLAUDE_CODE_VERSION=${DELEGATE_CLAUDE_CODE_VERSION:-latest}
# No ":-": an empty value means "block nothing".
QGA_BLOCK_RPCS=${DELEGATE_QGA_BLOCK_RPCS-guest-exec,guest-exec-status}
EXTRA_PACKAGES=${DELEGATE_EXTRA_PACKAGES:-}
BUILD_USER=${DELEGATE_BUILD_USER:-}
KEEP_STAGING=${DELEGATE_KEEP_STAGING:-0}

UNITS="run-delegate.mount delegate-guest.path delegate-guest.service delegate-growroot.service"
LIBEXEC_DIR=/usr/local/libexec/delegate
QGA_CONF=/etc/qemu/qemu-ga.conf
# The commands the host needs: ping to see the agent, file-* to write the bootstrap.
QGA_REQUIRED="guest-sync guest-sync-delimited guest-ping guest-info guest-file-open guest-file-write guest-file-close"

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

log() { printf 'provision: %s\n' "$*" >&2; }
die() {
  printf 'provision: error: %s\n' "$*" >&2
  exit 1
}

# systemd is running only in a booted system, not in a chroot.
systemd_running() { [ -d /run/systemd/system ]; }

check_environment() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (Packer runs it with sudo)"
  [ -r /etc/os-release ] || die "/etc/os-release is missing: not a Debian or Ubuntu system"
  # shellcheck disable=SC1091
  . /etc/os-release
  case "${ID:-}" in
    debian | ubuntu) ;;
    *) die "unsupported distribution '${ID:-unknown}': Debian or Ubuntu expected" ;;
  esac
  case $SKIP_NETWORK in
    0 | 1) ;;
    *) die "DELEGATE_SKIP_NETWORK_INSTALLS must be 0 or 1, got '$SKIP_NETWORK'" ;;
  esac
  case $JOB_USER in
    root | '' | *[!a-z0-9_-]*) die "DELEGATE_JOB_USER '$JOB_USER' is not a valid unprivileged user name" ;;
  esac
  for f in delegate-guest systemd/delegate-guest.service libexec/wait-bootstrap; do
    [ -e "$STAGING/$f" ] || die "$STAGING/$f is missing: upload packer/files/ and the delegate-guest binary first"
  done
  log "system: ${PRETTY_NAME:-$ID}; systemd running: $(systemd_running && echo yes || echo 'no (chroot)')"
}

wait_for_cloud_init() {
  # On a freshly cloned cloud image cloud-init may still be running apt.
  if systemd_running && command -v cloud-init >/dev/null 2>&1; then
    log "waiting for cloud-init to finish"
    cloud-init status --wait >/dev/null 2>&1 || log "cloud-init reported a problem; continuing"
  fi
}

apt_install() {
  apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

install_packages() {
  log "installing packages"
  apt-get update
  # xz-utils unpacks Node.js; cloud-guest-utils has growpart for growroot.
  # shellcheck disable=SC2086 # EXTRA_PACKAGES is a word list on purpose
  apt_install ca-certificates curl jq bash python3 python3-venv git xz-utils \
    qemu-guest-agent cloud-guest-utils e2fsprogs util-linux $EXTRA_PACKAGES
}

configure_guest_agent() {
  log "configuring qemu-guest-agent (blocked: ${QGA_BLOCK_RPCS:-nothing})"
  old_ifs=$IFS
  IFS=,
  for rpc in $QGA_BLOCK_RPCS; do
    for needed in $(echo "$QGA_REQUIRED" | tr ' ' ','); do
      [ "$rpc" != "$needed" ] || die "DELEGATE_QGA_BLOCK_RPCS may not block $rpc: the host needs it to deliver the bootstrap"
    done
  done
  IFS=$old_ifs

  mkdir -p "${QGA_CONF%/*}"
  # Written in full, so no allow-list or block-list from elsewhere survives.
  {
    echo "# Written by delegate's template provisioning (packer/scripts/provision.sh)."
    echo "# The host delivers each job's bootstrap with guest-file-open/-write/-close,"
    echo "# which must never be blocked here."
    echo "[general]"
    if [ -n "$QGA_BLOCK_RPCS" ]; then
      echo "block-rpcs=$QGA_BLOCK_RPCS"
    fi
  } >"$QGA_CONF"
  chmod 0644 "$QGA_CONF"

  # A distribution unit that passes its own --block-rpcs/--allow-rpcs would
  # override the file: run the agent with the config file alone. UMask keeps
  # files it creates (the bootstrap) private to root.
  dropin=/etc/systemd/system/qemu-guest-agent.service.d
  mkdir -p "$dropin"
  unit_file=""
  for candidate in /lib/systemd/system/qemu-guest-agent.service /usr/lib/systemd/system/qemu-guest-agent.service; do
    if [ -f "$candidate" ]; then
      unit_file=$candidate
      break
    fi
  done
  {
    echo "# Written by delegate's template provisioning."
    echo "[Service]"
    echo "UMask=0077"
    if [ -n "$unit_file" ] && grep -Eq '^ExecStart=.*( -[ab]( |=|$)|--block-rpcs|--blacklist|--allow-rpcs|--allowlist|BLACKLIST|BLOCK_RPC|ALLOW_RPC)' "$unit_file"; then
      echo "ExecStart="
      echo "ExecStart=/usr/sbin/qemu-ga"
    fi
  } >"$dropin/10-delegate.conf"

  # Ask the agent itself how it reads the configuration.
  conf=$(qemu-ga --dump-conf 2>/dev/null) || die "qemu-ga --dump-conf failed: is qemu-guest-agent installed?"
  blocked=$(printf '%s\n' "$conf" | sed -n 's/^block-rpcs=//p')
  allowed=$(printf '%s\n' "$conf" | sed -n 's/^allow-rpcs=//p')
  for needed in guest-file-open guest-file-write guest-file-close; do
    case ",$blocked," in
      *",$needed,"*) die "qemu-ga still blocks $needed (block-rpcs=$blocked)" ;;
    esac
    if [ -n "$allowed" ]; then
      case ",$allowed," in
        *",$needed,"*) ;;
        *) die "qemu-ga allow-rpcs=$allowed does not allow $needed" ;;
      esac
    fi
  done
}

create_job_user() {
  if id "$JOB_USER" >/dev/null 2>&1; then
    log "job user $JOB_USER exists"
  else
    log "creating job user $JOB_USER"
    useradd --create-home --home-dir "/home/$JOB_USER" --shell /bin/bash \
      --user-group --comment "delegate jobs" "$JOB_USER"
  fi
  # No password (locked), no sudo, no admin groups.
  usermod --lock "$JOB_USER"
  for group in sudo admin wheel adm; do
    if id -nG "$JOB_USER" | tr ' ' '\n' | grep -qx "$group"; then
      gpasswd -d "$JOB_USER" "$group" >/dev/null
    fi
  done
  if grep -Eqs "^[^#]*\b$JOB_USER\b" /etc/sudoers /etc/sudoers.d/*; then
    die "a sudoers entry names $JOB_USER: remove it, the job user must not have sudo"
  fi
  chmod 0750 "/home/$JOB_USER"
}

install_runner() {
  bin="$STAGING/delegate-guest"
  magic=$(od -An -c -N4 "$bin" | tr -d ' ')
  [ "$magic" = "177ELF" ] || die "$bin is not an ELF executable"
  log "installing delegate-guest and its units"
  install -D -o root -g root -m 0755 "$bin" /usr/local/bin/delegate-guest
  install -d -o root -g root -m 0755 "$LIBEXEC_DIR"
  for f in wait-bootstrap growroot; do
    install -o root -g root -m 0755 "$STAGING/libexec/$f" "$LIBEXEC_DIR/$f"
  done
  for unit in $UNITS; do
    install -o root -g root -m 0644 "$STAGING/systemd/$unit" "/etc/systemd/system/$unit"
  done
  # The QEMU provider passes the bootstrap by fw_cfg, readable once this
  # module is loaded.
  echo qemu_fw_cfg >/etc/modules-load.d/delegate.conf

  # systemctl enable edits symlinks only, so it works in a chroot too.
  # shellcheck disable=SC2086 # UNITS is a word list
  systemctl enable $UNITS
  # A throwaway VM must not spend its first minutes on apt housekeeping.
  systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
  if [ -f /lib/systemd/system/unattended-upgrades.service ]; then
    systemctl disable unattended-upgrades.service
  fi
  if systemd_running; then
    systemctl daemon-reload
    systemctl start run-delegate.mount delegate-guest.path
    systemctl try-restart qemu-guest-agent.service
  fi
}

# Prints the Node.js version this run should have: exact ("22.11.0") or the
# latest of a major line ("22").
node_target() {
  case $NODE_VERSION in
    *[!0-9.]* | '') die "DELEGATE_NODE_VERSION must look like 22 or 22.11.0, got '$NODE_VERSION'" ;;
    *.*) echo "v$NODE_VERSION" ;;
    *) echo "latest-v$NODE_VERSION.x" ;;
  esac
}

install_node() {
  major=${NODE_VERSION%%.*}
  if command -v node >/dev/null 2>&1; then
    have=$(node --version)
    case $NODE_VERSION in
      *.*) [ "$have" = "v$NODE_VERSION" ] && {
        log "Node.js $have already installed"
        return 0
      } ;;
      *) case $have in v"$major".*)
        log "Node.js $have already installed"
        return 0
        ;;
      esac ;;
    esac
  fi
  case $(dpkg --print-architecture) in
    amd64) arch=x64 ;;
    arm64) arch=arm64 ;;
    *) die "no Node.js build for architecture $(dpkg --print-architecture)" ;;
  esac
  base="$NODE_DIST_URL/$(node_target)"
  work=$(mktemp -d)
  log "installing Node.js from $base"
  curl -fsSL --retry 5 --retry-delay 2 -o "$work/SHASUMS256.txt" "$base/SHASUMS256.txt"
  line=$(grep -E "  node-v[0-9.]+-linux-$arch\.tar\.xz\$" "$work/SHASUMS256.txt" | head -n 1)
  [ -n "$line" ] || die "no linux-$arch tarball listed in $base/SHASUMS256.txt"
  tarball=${line##* }
  curl -fsSL --retry 5 --retry-delay 2 -o "$work/$tarball" "$base/$tarball"
  (cd "$work" && printf '%s\n' "$line" | sha256sum -c --quiet -) || die "checksum mismatch for $tarball"
  top=${tarball%.tar.xz}
  # bin/, lib/, include/, share/ go under /usr/local; the release's own
  # top-level notes do not, and its licence goes with the other docs.
  tar -xJf "$work/$tarball" -C /usr/local --strip-components=1 --no-same-owner \
    --exclude="$top/CHANGELOG.md" --exclude="$top/README.md" --exclude="$top/LICENSE"
  mkdir -p /usr/local/share/doc/nodejs
  tar -xJf "$work/$tarball" -O "$top/LICENSE" >/usr/local/share/doc/nodejs/LICENSE
  rm -rf "$work"
  have=$(node --version)
  case $have in
    v"$major".*) log "Node.js $have installed" ;;
    *) die "installed Node.js is $have, expected major $major" ;;
  esac
}

install_claude_code() {
  log "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
  npm install --global --no-fund --no-audit --no-update-notifier --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
  # It must work for the job user, not only for root.
  version=$(runuser -u "$JOB_USER" -- env HOME="/home/$JOB_USER" claude --version) ||
    die "claude --version failed for $JOB_USER"
  log "Claude Code $version"
}

cleanup() {
  log "cleaning up so that every clone starts fresh"
  if [ -n "$BUILD_USER" ] && [ "$BUILD_USER" != root ] && id "$BUILD_USER" >/dev/null 2>&1; then
    # The build login keeps working for this session only.
    usermod --lock "$BUILD_USER"
    home=$(getent passwd "$BUILD_USER" | cut -d: -f6)
    rm -f "$home/.ssh/authorized_keys" "$home/.bash_history"
    rm -f /etc/sudoers.d/delegate-build
  fi
  rm -f /root/.bash_history
  rm -rf /root/.npm /root/.cache

  apt-get clean
  rm -rf /var/lib/apt/lists/*

  if command -v cloud-init >/dev/null 2>&1; then
    if cloud-init clean --help 2>&1 | grep -q -- --machine-id; then
      cloud-init clean --logs --machine-id
    else
      cloud-init clean --logs
    fi
  fi
  # Empty, not "uninitialized": systemd makes a new id at boot without running
  # first-boot presets that could re-enable what was masked above.
  : >/etc/machine-id
  if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    rm -f /var/lib/dbus/machine-id
  fi
  rm -f /var/lib/systemd/random-seed

  # SSH host keys must differ per clone: cloud-init makes new ones, and for
  # templates without it sshd creates missing keys before it starts.
  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
  if [ -f /lib/systemd/system/ssh.service ]; then
    mkdir -p /etc/systemd/system/ssh.service.d
    {
      echo "# Written by delegate's template provisioning: new host keys per clone."
      echo "[Service]"
      echo "# Reset, so that the keys exist before the distribution's 'sshd -t' check."
      echo "ExecStartPre="
      echo "ExecStartPre=/usr/bin/ssh-keygen -A"
      echo "ExecStartPre=/usr/sbin/sshd -t"
    } >/etc/systemd/system/ssh.service.d/10-delegate-hostkeys.conf
  fi

  find /var/log -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
  if systemd_running; then
    journalctl --rotate >/dev/null 2>&1 || true
    journalctl --vacuum-time=1s >/dev/null 2>&1 || true
  else
    rm -rf /var/log/journal/*
  fi
  if [ "$KEEP_STAGING" != 1 ]; then
    case $STAGING in
      /tmp/* | /var/tmp/*) rm -rf "$STAGING" ;;
    esac
  fi
}

main() {
  check_environment
  wait_for_cloud_init
  install_packages
  configure_guest_agent
  create_job_user
  install_runner
  if [ "$SKIP_NETWORK" = 1 ]; then
    log "DELEGATE_SKIP_NETWORK_INSTALLS=1: skipping Node.js and Claude Code"
  else
    install_node
    install_claude_code
  fi
  cleanup
  log "done"
}

main "$@"
