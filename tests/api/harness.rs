//! The harness itself: what makes a test fail that would otherwise pass by accident.

use crate::helpers::*;

#[tokio::test]
#[should_panic(expected = "catch-all: a request no mock of this test expects")]
async fn a_request_that_no_mock_expects_fails_the_test_when_the_app_is_dropped() {
    let app = spawn_app(Backend::Sqlite).await;
    // What a misrouted provider call looks like: wrong path, no credentials.
    let response = app
        .http
        .get(format!(
            "{}/Consultas/Pessoa/Telefon/11987654321",
            app.diretrix.uri()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500, "never a 404 that reads as nobody");
}

/// The databases of this server whose name starts with `prefix`.
async fn existing(conn: &mut sqlx::PgConnection, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(conn)
            .await
            .unwrap();
    names.sort();
    names
}

/// Creates the databases at once, each on a connection of its own: creating and dropping
/// take a second or more each on a busy server, one after another they add up.
async fn create(names: &[&String]) {
    futures::future::join_all(names.iter().map(|name| async move {
        let create = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut connect().await)
            .await
            .unwrap();
    }))
    .await;
}

async fn drop_all(conn: &mut sqlx::PgConnection, prefix: &str) {
    let names = existing(conn, prefix).await;
    futures::future::join_all(names.iter().map(|name| async move {
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut connect().await)
            .await
            .unwrap();
    }))
    .await;
}

/// The id of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

async fn connect() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sweep_drops_test_databases_of_dead_runs_and_keeps_those_of_live_ones() {
    // A prefix of its own, so the sweep under test only ever sees this test's databases.
    const PREFIX: &str = "enricher_sweeptest_";
    let mut conn = connect().await;
    drop_all(&mut conn, PREFIX).await;
    let mut alive = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let (dead, locked) = (dead_pid(), dead_pid());
    let name = |pid: u32| format!("{PREFIX}{pid}_{}", uuid::Uuid::new_v4().simple());
    let (of_dead, of_alive, of_locked, of_me) = (
        name(dead),
        name(alive.id()),
        name(locked),
        name(std::process::id()),
    );
    let unnamed = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
    create(&[&of_dead, &of_alive, &of_locked, &of_me, &unnamed]).await;
    // A run with this pid in another pid namespace: no such process here, but its lock held.
    let mut other_run = connect().await;
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(LIVE_RUN)
        .bind(locked as i32)
        .execute(&mut other_run)
        .await
        .unwrap();

    let seen_unnamed = sweep_test_databases(&mut conn, PREFIX).await;

    assert_eq!(seen_unnamed, 1);
    let mut kept = vec![
        of_alive.clone(),
        of_locked.clone(),
        of_me.clone(),
        unnamed.clone(),
    ];
    kept.sort();
    assert_eq!(existing(&mut conn, PREFIX).await, kept);

    // The other run ends: its database goes at the next sweep.
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut other_run)
        .await
        .unwrap();
    sweep_test_databases(&mut conn, PREFIX).await;
    kept.retain(|n| *n != of_locked);
    assert_eq!(existing(&mut conn, PREFIX).await, kept);

    alive.kill().unwrap();
    alive.wait().unwrap();
    drop_all(&mut conn, PREFIX).await;
}

#[tokio::test]
async fn the_sweep_drops_templates_of_other_migration_sets_only_when_unused_for_an_hour() {
    const PREFIX: &str = "enricher_sweeptpl_";
    let mut conn = connect().await;
    drop_all(&mut conn, PREFIX).await;
    let now = unix_now();
    let tpl = |n: u8| format!("{PREFIX}00000000000000{n:02x}");
    let (stale, unstamped, held, current, connected) = (tpl(1), tpl(2), tpl(3), tpl(4), tpl(5));
    let building = format!("{}_building", tpl(6));
    let long_ago = now - 2 * TEMPLATE_GRACE_SECS;
    let cases = [
        (&stale, Some(long_ago)),
        (&unstamped, None),
        (&held, Some(long_ago)),
        (&current, Some(long_ago)),
        (&connected, Some(long_ago)),
        (&building, None),
    ];
    create(&cases.map(|(db, _)| db)).await;
    for (db, stamp) in cases {
        if let Some(at) = stamp {
            stamp_template(&mut conn, db, at).await;
        }
    }
    // A live run of the `held` migration set, and someone connected to `connected`.
    let mut other_run = connect().await;
    sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
        .bind(LIVE_TEMPLATE)
        .bind(template_key(&held))
        .execute(&mut other_run)
        .await
        .unwrap();
    let user = {
        use sqlx::Connection;
        let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
        url.set_path(&format!("/{connected}"));
        sqlx::PgConnection::connect(url.as_str()).await.unwrap()
    };

    sweep_templates(&mut conn, PREFIX, &current, now).await;

    let mut kept = vec![
        unstamped.clone(),
        held.clone(),
        current.clone(),
        connected.clone(),
    ];
    kept.sort();
    assert_eq!(existing(&mut conn, PREFIX).await, kept);
    // The unstamped one was stamped now: kept within the hour, dropped after it.
    sweep_templates(&mut conn, PREFIX, &current, now + TEMPLATE_GRACE_SECS - 1).await;
    assert_eq!(existing(&mut conn, PREFIX).await, kept);
    sweep_templates(&mut conn, PREFIX, &current, now + TEMPLATE_GRACE_SECS + 1).await;
    let mut last = vec![held.clone(), current.clone(), connected.clone()];
    last.sort();
    assert_eq!(existing(&mut conn, PREFIX).await, last);

    drop(user);
    drop(other_run);
    drop_all(&mut conn, PREFIX).await;
}
