# syntax=docker/dockerfile:1
#
# port_exporter as a static binary in an empty image.
#
#   docker build -t port_exporter:0.1.0 .
#   docker run --rm -p 9799:9799 port_exporter:0.1.0
#   docker run --rm -p 9799:9799 \
#     -v "$PWD/examples/ports.toml:/etc/port_exporter/config.toml:ro" \
#     port_exporter:0.1.0 --config.file=/etc/port_exporter/config.toml
#
# Lint: hadolint Dockerfile

# The full rust image (not -slim) brings git, so build.rs can record the revision from .git
# for port_exporter_build_info; the builder's size does not reach the final image.
FROM rust:1.95.0-bookworm AS builder

# musl-gcc: ring (rustls's crypto) compiles C and assembly for the musl target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/*

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .

# The native musl target of the build platform (x86_64 or aarch64): a static executable, which
# is checked (no NEEDED entries, so no dynamic loader) and run once before it is kept.
# CC_<target> points the cc crate at musl-gcc for the target only (aarch64 has no
# aarch64-linux-musl-gcc in musl-tools); build scripts still build with the host's gcc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && export "CC_${target//-/_}=musl-gcc" \
    && rustup target add "$target" \
    && cargo build --release --locked --target "$target" \
    && install -D -m 0755 "target/$target/release/port_exporter" /out/port_exporter \
    && if readelf --dynamic /out/port_exporter | grep -q NEEDED; then \
        echo "port_exporter is not statically linked" >&2; exit 1; \
    fi \
    && /out/port_exporter --version \
    && /out/port_exporter --config.check --config.file examples/ports.toml

# Nothing but the binary: no shell, no libc, no users. /etc/hosts and /etc/resolv.conf come
# from the container runtime; the exporter makes no TLS client connections, so it needs no CA
# certificates.
FROM scratch

LABEL org.opencontainers.image.title="port_exporter" \
      org.opencontainers.image.description="Prometheus exporter of TCP port states: open, closed, filtered" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/port_exporter /bin/port_exporter

# nobody:nogroup. It needs no privileges: plain TCP connects out, HTTP in on an unprivileged
# port.
USER 65534:65534
EXPOSE 9799

# Without --config.file the embedded default probes localhost, which in a container is the
# container itself: pass your config, e.g. --config.file=/etc/port_exporter/config.toml.
ENTRYPOINT ["/bin/port_exporter"]
