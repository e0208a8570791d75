# syntax=docker/dockerfile:1
#
# The tenant-cleanup image: bin/analyzer, bin/marker, bin/cleaner, bin/tenantctl
# (built by `make build`) plus the container health probe, on distroless/static,
# running as the non-root user 65532. There is no ENTRYPOINT: each service picks
# its binary as the command (docker-compose.yml, deploy/k8s), e.g.
#
#   docker build -t tenant-cleanup .
#   docker run --rm -e DATA_PLANE_DATABASE_URL=… tenant-cleanup /usr/local/bin/cleaner
#   docker run --rm tenant-cleanup /usr/local/bin/analyzer -h
#
# The binaries listen on HTTP_ADDR (:9090): /metrics, /healthz, /readyz.

# The image's Go must be at least go.mod's go line (golang images set
# GOTOOLCHAIN=local): pin it with --build-arg GO_VERSION=1.26.8 if need be.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Static binaries; no VCS stamping (.git is not in the build context).
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build \
 && go build -o bin/healthcheck ./deploy/healthcheck \
 && for b in analyzer marker cleaner tenantctl healthcheck; do test -x "bin/$b" || { echo "bin/$b missing" >&2; exit 1; }; done \
 && mkdir -p /out/reports

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/analyzer /src/bin/marker /src/bin/cleaner /src/bin/tenantctl /src/bin/healthcheck /usr/local/bin/
# The analyzer writes its CSV report here (a volume in compose, an emptyDir in Kubernetes).
COPY --from=build --chown=65532:65532 /out/reports /reports
ENV HTTP_ADDR=:9090 \
    ANALYZER_REPORT_DIR=/reports
WORKDIR /reports
USER 65532:65532
EXPOSE 9090
# No ENTRYPOINT; the command names the service. Without one, print tenantctl's usage.
CMD ["/usr/local/bin/tenantctl", "--help"]
