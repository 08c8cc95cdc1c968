# consul-dns container image.
#   docker build -t consul-dns --build-arg CONSUL_DNS_COMMIT=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -p 8600:8600/udp -p 8600:8600/tcp -p 9153:9153 consul-dns            # shipped catalog
#   docker run --rm -p 8600:8600/udp -p 8600:8600/tcp consul-dns --listen 0.0.0.0:8600 \
#       --consul http://consul:8500 --state-dir /var/lib/consul-dns                         # live Consul catalog
# The image runs as an unprivileged user; port 8600 needs no privilege. Its healthcheck is the
# binary's own `healthcheck` subcommand (the image has no dig).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# .git stays out of the build context; the commit for --version comes in as an argument.
ARG CONSUL_DNS_COMMIT=""
COPY . .
RUN cargo build --release --locked --bin consul-dns \
    && strip target/release/consul-dns

FROM debian:bookworm-slim
# A fixed numeric uid/gid (10001), so USER needs no passwd lookup and volumes can be chowned
# from outside; --no-log-init keeps lastlog/faillog sparse for a high uid.
RUN groupadd --system --gid 10001 consul-dns \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/consul-dns consul-dns \
    && mkdir -p /var/lib/consul-dns /etc/consul-dns \
    && chown 10001:10001 /var/lib/consul-dns
COPY --from=build /src/target/release/consul-dns /usr/local/bin/consul-dns
COPY config/services.toml /etc/consul-dns/services.toml
USER 10001
WORKDIR /var/lib/consul-dns
EXPOSE 8600/udp 8600/tcp 9153/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["consul-dns", "healthcheck", "127.0.0.1:8600"]
ENTRYPOINT ["consul-dns"]
CMD ["--listen", "0.0.0.0:8600", "--http", "0.0.0.0:9153", "--static", "/etc/consul-dns/services.toml"]
