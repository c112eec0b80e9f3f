# The image the cluster runs: `api`, statically linked, alone in an empty image.
# `cargo xtask package` builds it (tag, version, labels); `docker build .` works too.
#
# Builds with BuildKit and with the classic builder alike: no `RUN --mount`, no
# `# syntax=` line (that would pull a frontend image).

# The base image, pinned; a private mirror is named with --build-arg, e.g.
#   --build-arg RUST_IMAGE=registry.example.com/mirror/rust:1.95.0-slim-bookworm
# .ci/builder-image makes this exact tag locally on a machine that cannot pull.
# The final stage is `scratch`, which is no image to pull from anywhere.
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm

FROM ${RUST_IMAGE} AS builder
WORKDIR /build
# A static binary, as `cargo xtask build --static` makes it: `+crt-static` for
# an explicit --target, so that proc-macro crates still link dynamically.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never

# 1. The dependencies, in a layer of their own: only the manifests and the lock
#    file, with an empty source for each workspace member, so that a change to
#    the service's source does not recompile them. `xtask` is a member, so its
#    manifest is needed, but it is never compiled (`--package api`).
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/
COPY xtask/Cargo.toml xtask/
RUN mkdir -p api/src xtask/src \
    && echo 'fn main() {}' > api/src/main.rs \
    && touch api/src/lib.rs \
    && echo 'fn main() {}' > xtask/src/main.rs \
    && cargo build --release --locked --package api --target x86_64-unknown-linux-gnu

# 2. The service. The version is declared only here, after the dependencies,
#    so a new version does not rebuild them; the crate reads API_VERSION with
#    option_env!. (Declared before the COPY: the classic builder runs each ARG
#    as a step of its own, and a cached one costs nothing on a source change.)
#    COPY keeps the files' times, which may be older than the stub's build:
#    touch them so cargo sees the change.
ARG API_VERSION=dev
COPY api/src api/src
RUN find api/src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --package api --target x86_64-unknown-linux-gnu \
    && cp target/x86_64-unknown-linux-gnu/release/api /api \
    && /api --version

# Nothing but the binary: no shell, no libc, no package to patch.
FROM scratch
# What never changes comes first, so a rebuild redoes only the COPY and the LABEL.
# nobody:nogroup, by number: the image has no /etc/passwd to look a name up in.
USER 65534:65534
EXPOSE 8080
# The image has no shell and no curl: the binary asks its own /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/api", "healthcheck"]
ENTRYPOINT ["/api"]
ARG API_VERSION=dev
ARG REVISION=unknown
ARG SOURCE=
ARG CREATED=
COPY --from=builder /api /api
# Last: the creation time differs on every build.
LABEL org.opencontainers.image.title="api" \
      org.opencontainers.image.version="${API_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}"
