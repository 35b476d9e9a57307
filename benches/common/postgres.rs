//! The Postgres the benchmarks use: found on the loopback, throwaway databases in it.

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

/// Runs `body` with the URL of a fresh database `enricher_bench_<uuid>`, in a task of its own,
/// and drops the database afterwards, also when `body` panicked (the panic then goes on).
pub async fn with_throwaway_database<F, Fut>(
    admin_url: &str,
    admin: &mut sqlx::PgConnection,
    body: F,
) where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let name = format!("enricher_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut *admin)
        .await
        .expect("CREATE DATABASE");
    let mut url = url::Url::parse(admin_url).expect("admin URL is a URL");
    url.set_path(&format!("/{name}"));
    let outcome = tokio::spawn(body(url.to_string())).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut *admin)
    .await
    .expect("DROP DATABASE");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
