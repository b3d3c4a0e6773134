# Builds tollgate-api, tollgate-worker, provider-sim and the tollgate CLI into one small runtime image.
# docker build -t tollgate .   then run the binary you need as the container's command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/tollgate-api target/release/tollgate-worker target/release/provider-sim \
      target/release/tollgate /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 tollgate
COPY --from=build /out/ /usr/local/bin/
USER tollgate
ENV TOLLGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
CMD ["tollgate-api", "serve"]
