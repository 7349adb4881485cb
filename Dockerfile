# syntax=docker/dockerfile:1.7
# One image with the three programs: coordinator (the default entrypoint),
# region-agent and lockctl, all in /usr/local/bin.
#
#   docker build -t globallock:dev .
#   docker run --rm -v $PWD/coordinator.toml:/etc/globallock/coordinator.toml:ro globallock:dev
#   docker run --rm --entrypoint /usr/local/bin/region-agent globallock:dev --config /etc/globallock/agent.toml
#   docker run --rm --entrypoint /usr/local/bin/lockctl globallock:dev --help
#
# The builder's toolchain is the one rust-toolchain.toml pins (tests/t87 checks
# that RUST_VERSION below matches it). The runtime is Debian 12 slim: the programs
# link only glibc and libgcc_s, so nothing is installed there and nothing at run
# time needs a shell. It runs as uid/gid 10001.
#
# checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: the image carries three programs with different health endpoints (coordinator: REST /healthz and /readyz; agent: its gRPC Health call; lockctl is a CLI) and no shell or HTTP client to run a check with. Kubernetes probes (deploy/k8s) and compose healthchecks of the services that need them do the probing.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# protoc and the well-known .proto files: proto/ and etcd-client generate code at build time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds; the
# binaries are copied out of the cached target directory into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p coordinator -p region-agent -p lockctl \
 && mkdir -p /out \
 && cp target/release/coordinator target/release/region-agent target/release/lockctl /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
LABEL org.opencontainers.image.title="globallock" \
      org.opencontainers.image.description="Multi-region global lock service: coordinator, region-agent, lockctl" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named user for uid 10001 (logs and ps show a name), the directories the sample
# configurations use (state_dir, audit logs), and nothing else.
RUN groupadd --system --gid 10001 globallock \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/globallock \
      --no-create-home --shell /usr/sbin/nologin globallock \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/globallock /var/lib/globallock/agent /var/log/globallock \
 && install -d -m 0755 /etc/globallock /etc/globallock/tls
COPY --from=builder /out/coordinator /out/region-agent /out/lockctl /usr/local/bin/
USER 10001:10001
# gRPC, REST and metrics of the coordinator; API and metrics of the agent.
EXPOSE 7400 7480 7490 7411 7491
ENTRYPOINT ["/usr/local/bin/coordinator"]
CMD ["--config", "/etc/globallock/coordinator.toml", "--log-format", "json"]
