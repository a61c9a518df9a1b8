# Multi-stage build: a Rust toolchain image builds the release binary, a slim Debian
# image runs it as an unprivileged user. Not built or run in CI (Docker cannot run on the
# build machines); see docs/OPERATIONS.md.
#
#   docker build -t dispa .
#   docker run --rm -p 8080:8080 -e DISPA_ADMIN_TOKEN=... \
#     -v $PWD/deploy/compose/dispa.toml:/etc/dispa/config.toml dispa
# (a config for a container binds 0.0.0.0 and names its targets as the container sees
# them: deploy/compose/dispa.toml is the example; config/config.toml binds loopback.)
#
# io_uring: Docker's default seccomp profile blocks io_uring_setup, so inside a default
# container Dispa logs one warning and uses epoll. To use io_uring, run with a seccomp
# profile that allows io_uring_setup/enter/register (or --security-opt seccomp=unconfined).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/dispa

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/dispa --shell /usr/sbin/nologin dispa \
 && mkdir -p /etc/dispa /var/lib/dispa \
 && chown dispa:dispa /var/lib/dispa
COPY --from=build /src/target/release/dispa /usr/local/bin/dispa
COPY deploy/compose/dispa.toml /etc/dispa/config.toml
USER dispa
# Relative paths in the config (logs/, data/traffic.db) land here: mount a volume.
WORKDIR /var/lib/dispa
VOLUME ["/var/lib/dispa"]
# proxy, status API, Prometheus metrics
EXPOSE 8080 8081 9090
STOPSIGNAL SIGTERM
# /health answers 200 while Dispa runs (bash's /dev/tcp: the slim image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8081 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/dispa"]
CMD ["-c", "/etc/dispa/config.toml"]
