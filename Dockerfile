# syntax=docker/dockerfile:1
# scimgate as a sidecar: a static binary on distroless, running as nonroot,
# with its database and generated secrets on the /data volume.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# .ci/docker-build-steps.sh runs this same line in CI (no Docker engine there).
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/scimgate ./cmd/scimgate
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/scimgate /usr/local/bin/scimgate
COPY --from=build --chown=65532:65532 /out/data /data
COPY config.example.yaml /etc/scimgate/config.yaml
# The environment contract of README.md ("Configure"); override at `docker run -e`.
# The admin listener binds all interfaces inside the container so that
# Prometheus can scrape /metrics; /admin/ needs the admin token.
ENV SCIMGATE_CONFIG=/etc/scimgate/config.yaml \
    SCIMGATE_DATA_DIR=/data \
    SCIMGATE_LISTEN=:8080 \
    SCIMGATE_ADMIN_LISTEN=:8081
USER 65532:65532
VOLUME /data
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/scimgate", "health"]
ENTRYPOINT ["/usr/local/bin/scimgate"]
CMD ["serve"]
