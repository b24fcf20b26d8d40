# regcred's container image. Multi-stage: dependencies are compiled in a layer of their own, cached until
# Cargo.toml or Cargo.lock change; the runtime image is distroless, non-root, with nothing but the binary.
# (This repository's CI has no Docker engine; the build stages mirror `cargo build --release --locked`.)

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# 1. Dependencies only: the manifest with stub sources (the [[bench]] targets must exist for cargo to read it).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in controller webhook admission; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin regcred \
 && rm -rf src benches
# 2. regcred itself.
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin regcred

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/regcred /usr/local/bin/regcred
# The nonroot user of distroless (65532); the chart also sets runAsNonRoot and a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/regcred"]
CMD ["run"]
