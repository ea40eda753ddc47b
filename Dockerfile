# Builds every orderflow binary into one image; docker-compose.yml runs each service from it
# with its own command. Toolchain matches rust-toolchain.toml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir /out \
    && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 orderflow
COPY --from=build /out/ /usr/local/bin/
USER orderflow
ENV KAFKA_BROKERS=kafka:19092 \
    DATABASE_URL=postgres://postgres:orderflow@postgres:5432/orderflow
CMD ["orderflow", "--help"]
