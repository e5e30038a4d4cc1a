# lemming as a container: a static (musl) binary on an empty base image.
#
#   docker build -t lemming .
#   docker run --rm -v "$PWD/my-org:/org" -p 7878:7878 \
#       -e LEMMING_API_TOKEN="$(openssl rand -hex 32)" lemming
#
# The org is a volume (/org): the container runs `lemming run --http
# 0.0.0.0:7878` on it, the daemon and the dashboard in one process. Listening
# on every address needs a token from the environment (LEMMING_API_TOKEN);
# without one the server refuses to start. `lemming init` on an empty volume:
#   docker run --rm -v "$PWD/my-org:/org" lemming init /org
#
# The same static binary builds outside a container too:
#   rustup target add x86_64-unknown-linux-musl && apt-get install musl-tools
#   cargo build --release --target x86_64-unknown-linux-musl --bin lemming
# (the test suite does not build this image).
#
# Tools that run programs (run_command, custom tools) need bubblewrap or
# Landlock; in a container, `sandbox = "landlock"` (a kernel feature, no
# binary) is the one that works without extra privileges.

FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
    && apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No debug info in the image's binary (the release profile keeps some for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin lemming \
    && cp target/x86_64-unknown-linux-musl/release/lemming /lemming

FROM scratch
COPY --from=build /lemming /lemming
ENV LEMMING_ORG=/org
VOLUME /org
EXPOSE 7878
ENTRYPOINT ["/lemming"]
CMD ["run", "--http", "0.0.0.0:7878"]
