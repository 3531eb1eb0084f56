# syntax=docker/dockerfile:1
# One image for every role (tidemark scheduler|worker|server|run|migrate) and
# for the demo upstream; docker-compose.yml runs it.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/tidemark ./cmd/demo-upstream ./deploy/httpcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /etc/tidemark/
ENV TIDEMARK_CONFIG=/etc/tidemark/tidemark.yaml
EXPOSE 8080 9000
USER nonroot:nonroot
ENTRYPOINT ["tidemark"]
