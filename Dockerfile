# Multi-stage build of every pmcore service binary into one small image; the
# compose file picks the binary with `command`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/api target/release/worker target/release/scheduler \
       target/release/bucket-watcher target/release/audit-log target/release/messaging \
       target/release/der-gateway-relay /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 pmcore
COPY --from=build /out/ /usr/local/bin/
USER pmcore
ENTRYPOINT []
