# regcred's container image. Multi-stage: dependencies are compiled in a layer of their own, cached until
# Cargo.toml or Cargo.lock change; the runtime image is distroless, non-root, with nothing but the binary.
#
#   docker build -t regcred .                  (or: buildah build -t regcred .)
#
# BUILD_IMAGE and RUNTIME_IMAGE select the base images; their defaults are the public images users get. On a
# machine that cannot pull them, tools/image/build.sh makes local stand-ins from Debian packages and passes them.
ARG BUILD_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# 1. Dependencies only: the manifest with a stub for every target it declares (cargo refuses to read a manifest
#    whose [[bench]] files are missing), so this layer is reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/regcred-credential-provider.rs \
 && touch src/lib.rs \
 && for b in $(awk '/^\[\[bench\]\]/ {b = 1; next} b && /^name *=/ {gsub(/"/, "", $3); print $3; b = 0}' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$b.rs"; \
    done \
 && cargo build --release --locked --bin regcred \
 && rm -rf src
# 2. regcred itself (the bench stubs stay: cargo reads the manifest again).
COPY src ./src
# The kubelet's credential provider is linked statically (it runs from the node's filesystem, on whatever libc
# the node has): `cargo rustc` passes the flag to its final link only, so the dependencies built above are reused.
RUN touch src/main.rs src/lib.rs src/bin/regcred-credential-provider.rs \
 && cargo build --release --locked --bin regcred \
 && cargo rustc --release --locked --bin regcred-credential-provider -- -C target-feature=+crt-static

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/regcred /usr/local/bin/regcred
# Copied onto nodes by `regcred install-credential-provider` (the chart's opt-in node DaemonSet).
COPY --from=build /src/target/release/regcred-credential-provider /usr/local/bin/regcred-credential-provider
# The nonroot user of distroless (65532); the chart also sets runAsNonRoot and a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/regcred"]
CMD ["run"]
