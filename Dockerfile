# A static twilio-operator on a distroless base, running as a non-root user.
# Build: docker build -t twilio-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin twilio-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/twilio-operator /twilio-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/twilio-operator"]
