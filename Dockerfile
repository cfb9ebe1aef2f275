# syntax=docker/dockerfile:1
# Build: no system protoc needed (protos compile with protox).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin latchkey \
    && install -D target/release/latchkey /out/latchkey \
    && mkdir -p /out/data

# Run: distroless, non-root, nothing but the binary and libc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/latchkey /usr/local/bin/latchkey
COPY --from=build --chown=65532:65532 /out/data /var/lib/latchkey
ENV LATCHKEY_LISTEN_ADDR=0.0.0.0:50051 \
    LATCHKEY_METRICS_ADDR=0.0.0.0:9090 \
    LATCHKEY_DATABASE_URL=sqlite:///var/lib/latchkey/latchkey.db?mode=rwc \
    LATCHKEY_LOG_FORMAT=json
VOLUME ["/var/lib/latchkey"]
EXPOSE 50051 9090
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["serve"]
