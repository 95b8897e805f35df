# Rust builder: a Debian root filesystem with a C toolchain, cmake,
# pkg-config and headers (debootstrap on the host), plus the host's Rust
# toolchain copied in. Compiles the workspace with no network from crates
# vendored into the build context. With a registry, rust:1.95-bookworm
# takes its place; both put cargo on PATH and CARGO_HOME at /usr/local/cargo.
FROM scratch
ADD rootfs.tar /
COPY rust/ /usr/local/rust/
ENV LANG=C.UTF-8 \
    CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
CMD ["bash"]
