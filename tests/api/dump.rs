//! Every row of every table of a test database, as text: what "the service keeps no copy"
//! is checked against, whatever tables later migrations add.

use sqlx::{Connection, Row};

/// `(table, row as text)` for every row of every table the service owns, both backends.
/// Postgres: every base table of the `public` and `core` schemas, each row cast to text.
/// SQLite: every table, each column through `quote()`. Migration bookkeeping is included:
/// it must hold no personal data either.
pub async fn all_rows(url: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
              WHERE table_schema IN ('public', 'core') AND table_type = 'BASE TABLE'
              ORDER BY 1, 2",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(tables.len() >= 7, "every table is listed: {tables:?}");
        for (schema, table) in tables {
            let sql = format!("SELECT t::text FROM \"{schema}\".\"{table}\" t");
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            out.extend(rows.into_iter().map(|r| (format!("{schema}.{table}"), r)));
        }
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert!(tables.len() >= 7, "every table is listed: {tables:?}");
        for table in tables {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(&table)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let expr = columns
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let sql = format!("SELECT {expr} AS row FROM \"{table}\"");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            out.extend(
                rows.iter()
                    .map(|r| (table.clone(), r.get::<String, _>("row"))),
            );
        }
    }
    out
}

/// Every string value in a JSON document, depth first.
pub fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Every value of the fixture person (Maria), lowercased: each string of the Work API answer
/// that says something about her (five characters or more, so "SP" or "1" do not match
/// everywhere), and the other forms her identifiers take in requests, messages and rows
/// (CPF with dots, phones formatted and in E.164, postcode and company number formatted,
/// income and birth date as the message writes them). Compare against lowercased text.
pub fn maria_values() -> Vec<String> {
    let mut values = Vec::new();
    strings(
        &crate::helpers::fixture("work_api_person.json"),
        &mut values,
    );
    values.retain(|v| v.chars().count() >= 5);
    values.extend(
        [
            "526.018.159-06",
            "526018159",
            "(11) 98765-4321",
            "98765-4321",
            "98765 4321",
            "987654321",
            "+5511987654321",
            "(11) 3800-1234",
            "3800-1234",
            "38001234",
            "+551138001234",
            "04077-000",
            "11.222.333/0001-81",
            "8.500,50",
            "1984-03-14",
            "Maria Aparecida",
            "Aparecida",
            "Souza",
            "ANA LUCIA",
            "JOSE CARLOS",
            "msouza84",
            "maria.souza",
        ]
        .map(str::to_owned),
    );
    let mut values: Vec<String> = values.into_iter().map(|v| v.to_lowercase()).collect();
    values.sort();
    values.dedup();
    values
}

/// The first of `values` that `text` holds (case-insensitively), if any.
pub fn leak<'a>(text: &str, values: &'a [String]) -> Option<&'a str> {
    let text = text.to_lowercase();
    values
        .iter()
        .find(|v| text.contains(v.as_str()))
        .map(String::as_str)
}
