# Tollgate: tollgate-collector, tollgate-shadow-proxy and tollgate-loadtest in one small
# image that runs as a non-root user.
#   docker build -t ghcr.io/tollgate-dev/tollgate:0.1.0 .
#   docker run -p 8080:8080 ghcr.io/tollgate-dev/tollgate:0.1.0
# The default command is a playground: the embedded `dev` write key, served on the
# container's network (--expose-dev-source says so on purpose). In production pass
# --config with your own sources, as the Kubernetes manifests do.

# The toolchain the project is tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by the rdkafka crate (bundled, statically linked).
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
# The `dist` profile: `release` with the whole program optimised as one unit.
RUN cargo build --profile dist --locked \
      -p tollgate-collector -p tollgate-shadow-proxy -p tollgate-loadtest \
 && mkdir -p /out/bin /out/data \
 && cp target/dist/tollgate-collector target/dist/tollgate-shadow-proxy \
       target/dist/tollgate-loadtest /out/bin/

# glibc, libgcc and CA certificates, no shell, user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# The local log's directory, writable by the non-root user (Kubernetes mounts a volume).
COPY --from=build --chown=65532:65532 /out/data /var/lib/tollgate
# The example configuration: schemas and privacy policies (Kubernetes mounts its own).
COPY config/schemas /etc/tollgate/schemas
COPY config/privacy.toml /etc/tollgate/privacy/privacy.toml
ENV TOLLGATE_SCHEMAS__DIR=/etc/tollgate/schemas \
    TOLLGATE_PRIVACY__FILE=/etc/tollgate/privacy/privacy.toml \
    TOLLGATE_LOG__DATA_DIR=/var/lib/tollgate
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT []
CMD ["tollgate-collector", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090", "--expose-dev-source"]
