# Strategy "@STRATEGY@": the image of @WORKER@ alone, self-contained: its own
# builder stage compiles only this worker. @PURPOSE@
#
# Generated from dockerfiles/templates/single-worker.Dockerfile by the test
# `per_worker_dockerfiles_are_the_template_rendered` (FLEETBENCH_BLESS=1
# rewrites them); edit the template, not this file.
#
# Build arguments (fleetbench sets them from fleetbench.toml):
#   BUILDER_IMAGE      Rust toolchain: rust:1.95-bookworm, or the bootstrap builder
#   RUNTIME_IMAGE      debian:bookworm-slim (dynamic glibc) or scratch (static)
#   RUSTFLAGS          "-C target-feature=+crt-static" for scratch
#   TARGET             Rust target triple
#   PREBUILT           non-empty: package prebuilt/<TARGET>/ from the context
#                      instead of compiling (fleetbench build --mode prebuilt)
#   SOURCE_DATE_EPOCH  time of every file in the image (the last commit)
#   REVISION, SOURCE   OCI labels
#
# Each stage starts with a step of its own (ARG STAGE=<stage of image>).
# The classic builder looks a step up among the children of the step before
# it and takes the newest match. Without such a step the nine files of a
# strategy share their leading steps; and in the prebuilt mode both stages
# start from the same base, so one line shared by the two stages would lead
# the next build of the first stage into the second's chain. Either way a
# rebuild would miss its own cached steps.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
ARG STAGE=build-of-@STRATEGY@-@WORKER@
ARG RUSTFLAGS=""
ARG TARGET=x86_64-unknown-linux-gnu
ARG PREBUILT=""
ARG SOURCE_DATE_EPOCH=0
WORKDIR /src
COPY . .
RUN set -eu; \
    if [ -n "$PREBUILT" ]; then \
        bin="prebuilt/$TARGET"; \
    else \
        @PROFILE@cargo build --release --locked --target "$TARGET" -p @PACKAGE@ --bin @BINARY@; \
        bin="target/$TARGET/release"; \
    fi; \
    install -D -m 0755 "$bin/@BINARY@" /out/usr/local/bin/@BINARY@; \
    find /out -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

FROM ${RUNTIME_IMAGE}
ARG STAGE=@STRATEGY@-@WORKER@
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/fleetbench
COPY --from=build /out/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/@BINARY@"]
LABEL org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.title="@BINARY@" \
      org.fleetbench.strategy="@STRATEGY@" \
      org.fleetbench.worker="@WORKER@"
