//! Helpers for tests that need a real database: a fresh SQLite file or a fresh PostgreSQL
//! database per test, so tests never see each other's rows.

use sqlx::Connection;

/// The PostgreSQL server tests use: `SIGIL_TEST_POSTGRES_URL`, else the local default.
pub fn postgres_admin_url() -> String {
    std::env::var("SIGIL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates an empty database on the test PostgreSQL server and returns its URL, or `None`
/// (with a loud message) when no server answers.
pub async fn fresh_postgres_database() -> Option<String> {
    static DRIVERS: std::sync::Once = std::sync::Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let admin = postgres_admin_url();
    let mut conn = match sqlx::AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("SIGIL_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                // CI asked for PostgreSQL: not finding it is a failure, not a skip.
                return Some(format!("postgres://unreachable-required/{e}"));
            }
            eprintln!("!!! SKIPPING PostgreSQL: no server answers at {admin} ({e})");
            return None;
        }
    };
    let name = format!(
        "sigil_t_{}",
        sigil_types::encode_ulid(0, random10()).to_ascii_lowercase()
    );
    let create = format!("CREATE DATABASE {name}");
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await {
        eprintln!("!!! SKIPPING PostgreSQL: cannot create a test database ({e})");
        return None;
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

fn random10() -> [u8; 10] {
    let mut b = [0u8; 10];
    let _ = sigil_crypto::fill_random(&mut b);
    b
}

/// SQLite's query plan for `sql` with `values`, one step a line.
#[cfg(test)]
pub(crate) async fn sqlite_plan(pool: &sqlx::AnyPool, sql: &str, values: Vec<crate::sql::Value>) -> String {
    use sqlx::Row;
    let mut explain = crate::sql::Sql::with(
        crate::sql::Placeholders::Anonymous,
        &format!("EXPLAIN QUERY PLAN {sql}"),
    );
    explain.values = values;
    let steps: Vec<String> = explain
        .query()
        .fetch_all(pool)
        .await
        .expect("plan")
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect();
    steps.join("\n")
}
