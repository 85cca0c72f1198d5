#!/bin/sh
# loop agent container entrypoint. Runs as root on every container start (every turn), so it
# must stay fast: no package installs, no walks beyond CHOWN_PATHS.
#
# Inputs (environment, set by loop's runner):
#   HOST_USER, HOST_UID, HOST_GID  the host user the agent stands in for
#   HOME                           the agent's home (same path as on the host)
#   CHOWN_PATHS                    colon-separated paths to hand to the agent (chown -R)
#   LOOP_DOCKERPROXY_ENABLED=1     start `loop dockerproxy` in the background, as root, and wait
#                                  (at most 5 s) for its socket /run/loop/docker.sock
#   LOOP_GATE_ENABLED=1            exec `loop syscallwrap -- CMD...` as root (it drops privileges)
# Otherwise CMD runs as the agent user through gosu.
#
# Docker proxy: the host's Docker socket is mounted at /run/loop-docker-host/docker.sock, in a
# root-only (0700) tmpfs; the directory is made root-only again here before anything else runs,
# so the agent (another uid, maybe one in the host's docker group) can never open it. Only the
# proxy, root without capabilities, connects to it. The agent reaches the proxy through
# DOCKER_HOST=unix:///run/loop/docker.sock or /var/run/docker.sock. Without the gate,
# LOOP_GATE_TOKEN (the proxy's approval token) is removed from the agent's environment here;
# with the gate, `loop syscallwrap` removes it.
#
# The agent never runs as uid 0: the claude CLI refuses --dangerously-skip-permissions as root.
# loop's runner passes the host user's non-zero uid. When HOST_UID is unset or 0 (loop itself
# runs as root, as on CI and many servers), the agent is user `agent` with uid/gid 1000, and the
# files it writes into bind mounts are owned by 1000:1000 on the host.
#
# Exported for the command (and for `loop syscallwrap`): AGENT_USER, AGENT_UID, AGENT_GID.
set -eu

log() { echo "entrypoint: $*" >&2; }

# --- docker proxy, first of all: the host's socket is root's alone ------------------------------
DOCKER_HOST_DIR=/run/loop-docker-host
if [ "${LOOP_DOCKERPROXY_ENABLED:-}" = 1 ] && [ -e "$DOCKER_HOST_DIR" ]; then
    chown root:root "$DOCKER_HOST_DIR"
    chmod 0700 "$DOCKER_HOST_DIR"
fi

is_uint() {
    case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}
# A name that is safe in passwd/group and not all digits (gosu would take digits for a uid).
valid_name() {
    case "$1" in
        '' | -* | *[!A-Za-z0-9._@-]*) return 1 ;;
        *[!0-9]*) [ ${#1} -le 64 ] ;;
        *) return 1 ;;
    esac
}
# Field N of the passwd/group entry with key K (name or id), or empty.
field_of() { getent "$1" "$2" | head -n 1 | cut -d: -f"$3"; }

AGENT_USER=${HOST_USER:-}
AGENT_UID=${HOST_UID:-}
AGENT_GID=${HOST_GID:-}

if ! is_uint "$AGENT_UID" || [ "$AGENT_UID" -eq 0 ]; then
    # No usable host uid (unset, not a number, or root): a fixed unprivileged agent.
    AGENT_USER=agent
    AGENT_UID=1000
    AGENT_GID=1000
fi
if ! is_uint "$AGENT_GID" || [ "$AGENT_GID" -eq 0 ]; then
    # Never hand the agent the root group either.
    AGENT_GID=$AGENT_UID
fi
valid_name "$AGENT_USER" || AGENT_USER=agent
HOME=${HOME:-/home/$AGENT_USER}
case "$HOME" in
    *:* | *"
"*) HOME=/home/$AGENT_USER ;;   # cannot be written into /etc/passwd
    /*) ;;
    *) HOME=/home/$AGENT_USER ;;
esac
export HOME

# Users and groups are written straight into /etc/passwd and /etc/group: useradd/groupadd cost
# ~130 ms per start, this costs ~1 ms. gosu reads these files, and it sets HOME from the passwd
# entry, so the entry's home must be $HOME.

# --- user name: HOST_USER unless the image already has that name for another uid ---------------
existing_uid=$(field_of passwd "$AGENT_USER" 3)
if [ -n "$existing_uid" ] && [ "$existing_uid" != "$AGENT_UID" ]; then
    # The name belongs to someone else in the image (root, daemon, ...): never reuse it.
    log "user name '$AGENT_USER' is taken by uid $existing_uid in the image; using another name"
    AGENT_USER=agent
    existing_uid=$(field_of passwd "$AGENT_USER" 3)
    if [ -n "$existing_uid" ] && [ "$existing_uid" != "$AGENT_UID" ]; then
        AGENT_USER=agent$AGENT_UID
        existing_uid=$(field_of passwd "$AGENT_USER" 3)
    fi
fi

# --- group: reuse whatever group already has AGENT_GID, else create one --------------------------
if ! getent group "$AGENT_GID" >/dev/null; then
    group_name=$AGENT_USER
    if getent group "$group_name" >/dev/null; then
        group_name=agent$AGENT_GID   # the name is taken by another gid (e.g. "daemon")
    fi
    echo "$group_name:x:$AGENT_GID:" >>/etc/group
    [ ! -f /etc/gshadow ] || echo "$group_name:!::" >>/etc/gshadow
fi

# --- user ------------------------------------------------------------------------------------------
if [ -z "$existing_uid" ]; then
    # The uid may already belong to another name in the image; ours is then an alias of it
    # (lookups by name find ours, lookups by uid may show the older name).
    echo "$AGENT_USER:x:$AGENT_UID:$AGENT_GID::$HOME:/bin/bash" >>/etc/passwd
    [ ! -f /etc/shadow ] || echo "$AGENT_USER:!:::::::" >>/etc/shadow
elif [ "$(field_of passwd "$AGENT_USER" 4)" != "$AGENT_GID" ] \
    || [ "$(field_of passwd "$AGENT_USER" 6)" != "$HOME" ]; then
    # Same name and uid (a restarted container, or a name the image already has): fix gid/home.
    awk -F: -v OFS=: -v n="$AGENT_USER" -v g="$AGENT_GID" -v h="$HOME" \
        '$1 == n { $4 = g; $6 = h } { print }' /etc/passwd >/etc/passwd.loop-new
    cat /etc/passwd.loop-new >/etc/passwd
    rm -f /etc/passwd.loop-new
fi
export AGENT_USER AGENT_UID AGENT_GID

# --- home: create if missing; own its top directory unless it is a bind mount from the host -------
# Docker creates the parents of bind mounts (e.g. $HOME/.loop/...) owned by root, so the home
# may exist but be root's. A home that is itself a mount point belongs to the host: left alone.
# (No stat here: old gVisor releases fail statx, which coreutils' stat uses.)
if [ ! -d "$HOME" ]; then
    mkdir -p "$HOME"
    chown "$AGENT_UID:$AGENT_GID" "$HOME"
elif ! awk -v p="$HOME" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    chown "$AGENT_UID:$AGENT_GID" "$HOME"
fi

# --- CHOWN_PATHS: named volume targets and copied files ------------------------------------------
if [ -n "${CHOWN_PATHS:-}" ]; then
    old_ifs=$IFS
    IFS=:
    set -f   # split on ':' only, no globbing
    for p in $CHOWN_PATHS; do
        if [ -n "$p" ] && [ -e "$p" ]; then
            chown -R "$AGENT_UID:$AGENT_GID" -- "$p" || log "chown failed for $p"
        fi
    done
    set +f
    IFS=$old_ifs
fi

LOOP_BIN=/usr/local/bin/loop

# --- docker proxy: root, in the background, before any privilege drop ----------------------------
# It drops every capability itself; the agent (another uid) cannot signal it. Its stdout must
# not reach the container's stdout, which is the agent's stream-json.
if [ "${LOOP_DOCKERPROXY_ENABLED:-}" = 1 ]; then
    if [ ! -x "$LOOP_BIN" ]; then
        log "LOOP_DOCKERPROXY_ENABLED=1 but $LOOP_BIN is missing; refusing to start without the docker proxy"
        exit 126
    fi
    "$LOOP_BIN" dockerproxy </dev/null >&2 &
    proxy_pid=$!
    # The agent's first docker call must not race the proxy's bind: wait for its socket.
    proxy_socket=/run/loop/docker.sock
    tries=0
    while [ ! -S "$proxy_socket" ]; do
        if ! kill -0 "$proxy_pid" 2>/dev/null; then
            log "loop dockerproxy exited before listening; see its error above"
            exit 126
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            log "loop dockerproxy did not listen on $proxy_socket within 5 s"
            exit 126
        fi
        sleep 0.05
    done
    if [ "${LOOP_GATE_ENABLED:-}" != 1 ]; then
        # The proxy has read its approval token; the agent must not.
        unset LOOP_GATE_TOKEN
    fi
fi

# --- run the command -------------------------------------------------------------------------------
if [ "${LOOP_GATE_ENABLED:-}" = 1 ]; then
    if [ -x "$LOOP_BIN" ]; then
        # The wrapper stays root to serve the seccomp listener and drops the child to AGENT_USER.
        exec "$LOOP_BIN" syscallwrap -- "$@"
    fi
    # Fail closed: the gate was asked for and cannot run.
    log "LOOP_GATE_ENABLED=1 but $LOOP_BIN is missing; refusing to run ungated"
    exit 126
fi

exec gosu "$AGENT_USER" "$@"
