//! Pieces every benchmark shares. A folder module, so cargo does not take it for a bench.

use std::time::Duration;

use sqlx::Connection;

/// The Postgres tests use, if it is on the loopback and answers.
pub async fn postgres_admin() -> Result<(String, sqlx::PgConnection), String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let parsed = url::Url::parse(&url).map_err(|_| "TEST_DATABASE_URL is not a URL".to_owned())?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        return Err("TEST_DATABASE_URL is not on the loopback (benchmarks stay local)".to_owned());
    }
    match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => Ok((url, conn)),
        Ok(Err(_)) => Err(format!(
            "no Postgres answering at {host}:{}",
            parsed.port().unwrap_or(5432)
        )),
        Err(_) => Err("connecting to Postgres timed out".to_owned()),
    }
}
