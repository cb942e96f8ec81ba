# imager with its boot assets. Build: `docker build -t imager .`; use:
#   docker run --rm -v $PWD/_out:/out -v $PWD/cache.oci:/image-cache.oci:ro imager \
#       iso --image-cache /image-cache.oci --output /out [--arch arm64]

# Both stages are bookworm: the binary links against the builder's glibc, and `cargo xtask assets`
# resolves the same Debian release the tests run against.
FROM rust:1-bookworm AS build
# `cargo xtask assets` fetches its packages with `apt-get download`, which needs the package lists
# (the image ships without them), arm64's too: both architectures' assets go into the image, as
# upstream's imager carries both. The only package installed is the one library grub-mkimage (run
# from its unpacked package to make GRUB's BIOS core image) needs beyond this image's own. The
# arm64 test node's init is built for aarch64-unknown-linux-musl and linked by rust-lld.
RUN dpkg --add-architecture arm64 \
    && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends libdevmapper1.02.1 liblzma5 \
    && rustup target add aarch64-unknown-linux-musl
WORKDIR /src
COPY . .
# The xtask is the single source of truth for which packages and files make up the assets.
RUN cargo build --release --locked -p imager \
    && cargo xtask assets --out /assets

FROM debian:bookworm-slim
COPY --from=build /src/target/release/imager /usr/local/bin/imager
COPY --from=build /assets /usr/share/imager/assets
ENV IMAGER_ASSETS=/usr/share/imager/assets
WORKDIR /out
ENTRYPOINT ["imager"]
