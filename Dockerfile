# syntax=docker/dockerfile:1
# cxpulse container image: a build stage with the Rust toolchain and the C
# toolchain librdkafka needs, and a small Debian runtime running as non-root.
#   docker build -t cxpulse .
#   docker run --rm cxpulse demo

FROM rust:1-bookworm AS build
# rdkafka builds librdkafka from source (make, a C compiler) with OpenSSL and
# zlib: the rust image has the compilers, these are the headers it links to.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the crates and the target directory between builds;
# the binary is copied out of the cached target dir so the next stage sees it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cxpulse \
 && install -D -m 0755 target/release/cxpulse /out/cxpulse

FROM debian:bookworm-slim AS runtime
# libssl3 for librdkafka's TLS (zlib and libc are in the base image);
# ca-certificates to verify brokers' certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cxpulse \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin cxpulse
COPY --from=build /out/cxpulse /usr/local/bin/cxpulse
USER 10001:10001
# In a container the HTTP endpoints listen on every interface (docs/metrics.md).
ENV CXPULSE_HTTP__LISTEN=0.0.0.0:9898
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/cxpulse"]
CMD ["run"]
