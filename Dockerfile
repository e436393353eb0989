# syntax=docker/dockerfile:1
# A static twilio-operator on a distroless base, running as a non-root user, for linux/amd64 and
# linux/arm64 (TARGETARCH picks the Rust target).
#
#   docker build -t twilio-operator:0.1.0 .                       # this machine's architecture
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t REGISTRY/twilio-operator:0.1.0 --push .                  # both, to a registry
#
# Each platform's build stage runs on that platform (under QEMU emulation for a foreign one), so
# the C parts of the TLS library are compiled by that platform's own musl toolchain.
FROM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN case "${TARGETARCH:-$(dpkg --print-architecture)}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}: build for amd64 or arm64" >&2; exit 1 ;; \
    esac > /rust-target \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# jemalloc fixes its page size when built: 64 KiB pages on arm64 also run on 4 and 16 KiB kernels.
RUN if [ "$(cat /rust-target)" = aarch64-unknown-linux-musl ]; then export JEMALLOC_SYS_WITH_LG_PAGE=16; fi \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin twilio-operator \
 && cp "target/$(cat /rust-target)/release/twilio-operator" /twilio-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /twilio-operator /twilio-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/twilio-operator"]
