# Enricher: build with cargo-chef so dependencies are a cached layer, run on a distroless image
# (glibc, CA certificates, tzdata, plus libgcc_s; no shell, no package manager).
#
#   docker build -t enricher .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://... enricher                   # serve
#   docker run --rm -e DATABASE_URL=postgres://... enricher enricher migrate              # migrate
#
# Builder and runtime are both Debian 12 (bookworm): a binary linked against a newer glibc
# (e.g. trixie) may not start on bookworm. The release profile (Cargo.toml) is fat LTO, one
# codegen unit and stripped: the final build step takes several minutes.

# ---- chef: toolchain + cargo-chef -------------------------------------------------------
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /app

# ---- planner: reduce the workspace to a dependency recipe ----------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: cook the dependencies (cached until Cargo.toml/Cargo.lock change), then build --
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
# The sources; config/default.toml, config/templates/ and migrations/ are compiled into the
# binary (include_str!, sqlx::migrate!), so they must be in the build context.
COPY . .
RUN cargo build --release --locked --bin enricher
# The runtime image has no shell to create directories with: the SQLite fallback's data/ is
# made here and copied over with its owner. libgcc_s (unwinding: panics are caught, not
# aborts) is the one library the binary needs beyond glibc (`ldd`: libc, libm, libgcc_s);
# it is taken from this Debian 12 stage, at its multiarch path, into an overlay of the root.
RUN mkdir -p /app/empty-data /app/overlay/usr/lib/"$(gcc -dumpmachine)" \
    && cp -L /usr/lib/"$(gcc -dumpmachine)"/libgcc_s.so.1 /app/overlay/usr/lib/"$(gcc -dumpmachine)"/

# ---- runtime ----------------------------------------------------------------------------------
# distroless/base-nossl: glibc, CA certificates (reqwest with rustls verifies server
# certificates against them), tzdata, /etc/passwd. Not distroless/cc: its libssl and libstdc++
# are never loaded by this binary (TLS is rustls) and cost about 9 MB. No shell: every command
# below is in exec form, and Fly's release_command ("enricher migrate") is run as an argument
# vector, resolved on PATH.
FROM gcr.io/distroless/base-nossl-debian12:nonroot AS runtime

COPY --from=builder /app/overlay/ /

# WORKDIR /app so the relative ./config (and the SQLite default sqlite://data/enricher.db)
# resolve inside the image.
WORKDIR /app
# On PATH, so a platform's command override (Fly's release_command = "enricher migrate")
# is a complete command: there is no ENTRYPOINT to prepend anything to it.
COPY --from=builder /app/target/release/enricher /usr/local/bin/enricher
COPY config/ /app/config/
# Migrations are embedded in the binary: no migrations/ at runtime.
# data/ is only used by the SQLite fallback; it must be writable by the non-root user.
COPY --from=builder --chown=10001:10001 /app/empty-data/ /app/data/

ENV APP_ENV=production
# The same non-root uid as before the move to distroless (not the image's own 65532), so a
# volume written by an earlier image stays writable.
USER 10001:10001

# 8080: HTTP API (PORT / ENRICHER__SERVER__PORT); 9091: Prometheus metrics (private).
EXPOSE 8080 9091
STOPSIGNAL SIGTERM
CMD ["enricher", "serve"]
