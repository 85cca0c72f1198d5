# loop's layer on a project's own image (issue #18): what loop needs in any agent container,
# copied from loop's agent image (built by `loop image build`) onto the project's base.
#
# Built by the daemon through the Engine API (classic builder, no BuildKit needed), from a
# context holding this file and project-layer.sh. BASE is the project's image (its Dockerfile's
# build, or a devcontainer's `image`); LOOP_IMAGE is loop's agent image. The Claude CLI is its
# native build (one glibc executable), so the project's base needs no Node and no apt: only a
# glibc Linux with a shell; project-layer.sh says precisely what is missing otherwise.
ARG LOOP_IMAGE
ARG BASE
FROM ${LOOP_IMAGE} AS loop

FROM ${BASE}
# The entrypoint starts as root to map the agent's user, then drops to it.
USER root
COPY project-layer.sh /tmp/loop-project-layer.sh
COPY --from=loop /usr/local/share/ca-certificates/loop/ /tmp/loop-ca/
RUN ["/bin/sh", "/tmp/loop-project-layer.sh"]
COPY --from=loop /usr/sbin/gosu /usr/local/bin/gosu
COPY --from=loop /usr/local/bin/claude /usr/local/bin/claude
COPY --from=loop /usr/local/bin/entrypoint.sh /usr/local/bin/entrypoint.sh
COPY --from=loop /usr/local/bin/loop /usr/local/bin/loop
# Proves both run on this base (its libc), so a mismatch fails the build, not a turn.
RUN ["/usr/local/bin/claude", "--version"]
RUN ["/usr/local/bin/loop", "--version"]
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    DISABLE_AUTOUPDATER=1
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["bash"]
