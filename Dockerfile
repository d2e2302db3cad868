# The infergate gateway with the example plugins. Three stages:
#   build     the gateway binary (release); its dependencies compile in a layer of their own,
#             rebuilt only when Cargo.toml, Cargo.lock or the protos change
#   plugins   the example WebAssembly plugins (wasm32-wasip2), scripts/build-plugins.sh --examples
#   runtime   debian:bookworm-slim (the builder's Debian, so the same glibc), a non-root user,
#             the binary, plugins/digits and the digits SavedModel
# From the repository root:
#   docker build -t infergate:0.1.0 .
#   docker run --rm -p 8080:8080 infergate:0.1.0    # the digits example, model run in process
# deploy/compose.yaml runs it beside TF Serving; docs/kubernetes.md deploys it to Kubernetes.

ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies only: the workspace manifests, the lock file, build.rs and the protos it
# compiles, with empty crates standing in for the sources. The root workspace names
# plugin-sdk (a member) and plugins/digits (a dev-dependency, which inherits from
# plugins/Cargo.toml), so their manifests are needed to resolve it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY plugin-sdk/Cargo.toml plugin-sdk/
COPY plugins/Cargo.toml plugins/
COPY plugins/digits/Cargo.toml plugins/digits/
RUN mkdir -p src plugin-sdk/src plugins/digits/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs plugin-sdk/src/lib.rs plugins/digits/src/lib.rs \
 && cargo build --release --locked --bin infergate
# The real sources (everything the crate includes: src/, docs/openapi.json, plugin-sdk/wit).
# COPY keeps the files' own modification times, which can be older than the stub's build:
# touch the crate roots so cargo rebuilds the crate (dependencies stay cached).
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin infergate

FROM ${RUST_IMAGE} AS plugins
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY plugin-sdk plugin-sdk
COPY plugins plugins
COPY scripts/build-plugins.sh scripts/
RUN scripts/build-plugins.sh --examples

FROM debian:bookworm-slim AS runtime
# CA roots for TLS to backends; nothing else is installed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid (10001), so Kubernetes' runAsNonRoot can verify it from the image.
# /etc/infergate/plugins is the (empty) mount point for operator-supplied model folders;
# /var/cache/infergate holds compiled plugins and is private to the gateway's user.
RUN groupadd --system --gid 10001 infergate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin infergate \
 && mkdir -p /etc/infergate/plugins /var/cache/infergate \
 && chown 10001:10001 /var/cache/infergate \
 && chmod 0700 /var/cache/infergate
COPY --from=build /src/target/release/infergate /usr/local/bin/infergate
# The example model folder as the repository has it (model.toml, model.onnx) plus the built
# component; the SavedModel is what TF Serving loads (the Kubernetes base copies it from here).
COPY plugins/digits/model.toml plugins/digits/model.onnx /usr/share/infergate/plugins/digits/
COPY --from=plugins /src/plugins/digits/plugin.wasm /usr/share/infergate/plugins/digits/
COPY models/digits /usr/share/infergate/models/digits
COPY deploy/docker/gateway.toml /etc/infergate/gateway.toml
USER 10001:10001
ENV RUST_LOG=info
EXPOSE 8080
# SIGTERM (the engine's default stop signal) drains: see server.drain_timeout_ms.
ENTRYPOINT ["/usr/local/bin/infergate"]
CMD ["serve", "--config", "/etc/infergate/gateway.toml"]
