# bottleq images: one image with the commands, the worker by default.
#
#   docker build -t bottleq .
#   docker run bottleq                     # worker (needs /dev/kvm and smolvm; see docker-compose.yml)
#   docker run bottleq dashboard -h        # or: enqueue, dashboard, api
#
# The commands are static Go binaries (CGO_ENABLED=0); smolvm is not in the
# image: the worker runs the host's smolvm, whose install directory is
# mounted read-only at /opt/smolvm at run time (docker-compose.yml does it).

FROM golang:1.24-bookworm AS build
WORKDIR /src
# Build with the toolchain in the image, never download another.
ENV GOTOOLCHAIN=local CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/enqueue ./cmd/dashboard ./cmd/api

FROM debian:bookworm-slim
# ca-certificates for rediss:// (Redis over TLS).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A non-root user. The worker opens /dev/kvm, which belongs to the host's
# kvm group: run it with that group's numeric id (compose: group_add with
# KVM_GID). The image's own kvm group is only a name for the common case.
ARG UID=10001
ARG KVM_GID=994
RUN groupadd --system --gid "${KVM_GID}" kvm 2>/dev/null || groupadd --system kvm; \
    useradd --uid "${UID}" --create-home --home-dir /home/bottleq --shell /usr/sbin/nologin --groups kvm bottleq \
 && mkdir -p -m 0700 /var/lib/bottleq \
 && chown bottleq:bottleq /var/lib/bottleq
COPY --from=build /out/ /usr/local/bin/
USER bottleq
WORKDIR /home/bottleq
ENV BOTTLEQ_DATA_DIR=/var/lib/bottleq \
    SMOLVM_BIN=/opt/smolvm/smolvm
# Choose the command with the first argument: worker (default), enqueue or
# dashboard, then its flags.
CMD ["worker"]
