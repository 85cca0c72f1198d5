#!/bin/sh
# Checks that a project's image can hold loop's agent, and adds loop's extra CA certificates
# to its trust store. Run once, as root, while loop's layer is built (project.Dockerfile).
set -u

missing=
[ -e /lib64/ld-linux-x86-64.so.2 ] || missing="$missing glibc (/lib64/ld-linux-x86-64.so.2: a musl image such as Alpine cannot run the Claude CLI),"
# bash: the agent's Bash tool and its login shell; the rest: loop's entrypoint.
for tool in bash getent awk cut head cat chown chmod mkdir rm kill sleep; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool,"
done
if [ -n "$missing" ]; then
    echo "loop: the project's image lacks:${missing%,}." >&2
    echo "loop: it needs a glibc Linux with bash and coreutils; install them in the project's Dockerfile." >&2
    exit 1
fi
command -v git >/dev/null 2>&1 \
    || echo "loop: note: the project's image has no git; the agent cannot run git commands"

# The extra CAs (one certificate per file) join the image's trust store.
if ls /tmp/loop-ca/*.crt >/dev/null 2>&1; then
    if command -v update-ca-certificates >/dev/null 2>&1; then
        mkdir -p /usr/local/share/ca-certificates/loop
        cp /tmp/loop-ca/*.crt /usr/local/share/ca-certificates/loop/
        update-ca-certificates >/dev/null 2>&1 || {
            echo "loop: update-ca-certificates failed" >&2
            exit 1
        }
    else
        mkdir -p /etc/ssl/certs
        cat /tmp/loop-ca/*.crt >>/etc/ssl/certs/ca-certificates.crt
    fi
fi
rm -rf /tmp/loop-ca /tmp/loop-project-layer.sh
