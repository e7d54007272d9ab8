//! Which database holds keeper's store and queue: keeper.db (SQLite, the
//! embedded default) or PostgreSQL (`KEEPER_DATABASE_URL`), so that several
//! hosts can share one queue.
//!
//! One contract, one implementation per driver: every operation of the
//! store, the queue and the registry matches on [`Db`] in one place and runs
//! that driver's SQL (`queue/sqlite.rs` and `queue/postgres.rs`, `store.rs`
//! and `store/postgres.rs`). The state machine, the retry rule and the error
//! classes above them are shared; both drivers run the same tests
//! (`queue/driver_tests.rs`).

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

/// An open pool on keeper's store.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// The driver's name, for logs and for refusals of what it lacks.
    pub fn driver(&self) -> Driver {
        match self {
            Db::Sqlite(_) => Driver::Sqlite,
            Db::Postgres(_) => Driver::Postgres,
        }
    }

    /// The SQLite pool, for the tests that look inside keeper.db; `None`
    /// on PostgreSQL.
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Db::Sqlite(pool) => Some(pool),
            Db::Postgres(_) => None,
        }
    }
}

/// A parameter of a statement that both drivers run (see [`Db::execute`]).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// Binds `params` in order to a query of either driver (`Query` or
/// `QueryAs`, which have the same `bind`).
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match *param {
                Param::Int(v) => query.bind(v),
                Param::OptInt(v) => query.bind(v),
                Param::Text(v) => query.bind(v),
                Param::Bytes(v) => query.bind(v),
            };
        }
        query
    }};
}

/// `sql` with PostgreSQL's parameters `$1`, `$2`… written as SQLite's
/// numbered `?1`, `?2`…, which bind the same way.
fn sqlite_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Statements written once for both drivers: PostgreSQL's `$n`
/// parameters, SQL both understand, and no `$` but the parameters'. For
/// tables whose SQL is the same on both but for a fragment or two (the
/// caller picks those by [`Db::driver`]).
impl Db {
    /// Runs `sql`; the rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, sqlx::Error> {
        let done = match self {
            Db::Sqlite(pool) => {
                let sql = sqlite_params(sql);
                let query: Query<'_, Sqlite, SqliteArguments> = sqlx::query(sqlx::AssertSqlSafe(sql));
                bind_params!(query, params).execute(pool).await?.rows_affected()
            }
            Db::Postgres(pool) => {
                let query: Query<'_, Postgres, PgArguments> = sqlx::query(sqlx::AssertSqlSafe(sql));
                bind_params!(query, params).execute(pool).await?.rows_affected()
            }
        };
        Ok(done)
    }

    /// Runs `sql`; its first row as a `T`, if any.
    pub async fn fetch_optional<T>(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        match self {
            Db::Sqlite(pool) => {
                let sql = sqlite_params(sql);
                let query: QueryAs<'_, Sqlite, T, SqliteArguments> = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                bind_params!(query, params).fetch_optional(pool).await
            }
            Db::Postgres(pool) => {
                let query: QueryAs<'_, Postgres, T, PgArguments> = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                bind_params!(query, params).fetch_optional(pool).await
            }
        }
    }
}

/// The two store drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Sqlite => "SQLite (keeper.db)",
            Driver::Postgres => "PostgreSQL",
        })
    }
}

/// Text-valued enums as columns: stored as their snake_case name in a TEXT
/// column of either driver, decoded back into the type (an unknown name is a
/// decode error naming it, never a silent default).
macro_rules! text_column {
    ($ty:ty) => {
        impl sqlx::Type<sqlx::Sqlite> for $ty {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <str as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $ty {
            fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?;
                <$ty>::parse(name).ok_or_else(|| format!("unknown {}: {name:?}", stringify!($ty)).into())
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                <$ty>::parse(name).ok_or_else(|| format!("unknown {}: {name:?}", stringify!($ty)).into())
            }
        }
        impl sqlx::Encode<'_, sqlx::Sqlite> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Sqlite>>::encode(self.as_str(), buf)
            }
        }
        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Postgres as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}
pub(crate) use text_column;

/// A struct read from a result row of either driver, field by field from
/// the column of the same name: the struct as written, plus `sqlx::FromRow`
/// for keeper.db's and PostgreSQL's rows. A field may say where it comes
/// from after its type: `= "id"` reads another column, `as i64` reads the
/// column as that type and converts it (an out-of-range value is a decode
/// error naming the column).
///
/// Written out instead of sqlx's derive: the derive's proc macro builds a
/// second copy of sqlx and both database drivers (SQLite's C code included)
/// for the compiler, in every build folder, for fourteen structs.
macro_rules! from_row {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                $field_vis:vis $field:ident : $field_ty:ty $(= $column:literal)? $(as $stored:ty)?
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $(
                $(#[$field_attr])*
                $field_vis $field: $field_ty,
            )*
        }
        $crate::db::from_row!(@impl sqlx::sqlite::SqliteRow, $name { $($field $(= $column)? $(as $stored)?),* });
        $crate::db::from_row!(@impl sqlx::postgres::PgRow, $name { $($field $(= $column)? $(as $stored)?),* });
    };
    (@impl $row_ty:ty, $name:ident { $($field:ident $(= $column:literal)? $(as $stored:ty)?),* }) => {
        impl<'r> sqlx::FromRow<'r, $row_ty> for $name {
            fn from_row(row: &'r $row_ty) -> Result<Self, sqlx::Error> {
                Ok($name {
                    $(
                        $field: $crate::db::from_row!(
                            @get row, $crate::db::from_row!(@column $field $($column)?) $(, $stored)?
                        ),
                    )*
                })
            }
        }
    };
    (@column $field:ident) => { stringify!($field) };
    (@column $field:ident $column:literal) => { $column };
    (@get $row:ident, $column:expr) => { sqlx::Row::try_get($row, $column)? };
    (@get $row:ident, $column:expr, $stored:ty) => {
        $crate::db::converted(sqlx::Row::try_get::<$stored, _>($row, $column)?, $column)?
    };
}
pub(crate) use from_row;

/// A column value read as `S`, converted to the field's type `T`.
pub(crate) fn converted<S, T>(stored: S, column: &str) -> Result<T, sqlx::Error>
where
    T: TryFrom<S>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(stored).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

#[cfg(test)]
/// Each scenario (an `async fn(Store)` of the calling module) once per
/// driver, as `sqlite::NAME` and `postgres::NAME` there: on a keeper.db in
/// a temp folder and on a fresh PostgreSQL database.
macro_rules! on_both_drivers {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
                        .await
                        .expect("open keeper.db");
                    super::$scenario(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let url = crate::db::test_postgres::fresh_database().await;
                    let store = crate::store::Store::open_postgres(&url, crate::store::Access::Create)
                        .await
                        .expect("open the PostgreSQL store");
                    super::$scenario(store).await;
                }
            )*
        }
    };
}
#[cfg(test)]
pub(crate) use on_both_drivers;

/// PostgreSQL for the unit tests: a new empty database per test on the
/// server that `KEEPER_TEST_POSTGRES_URL` names (a superuser URL; `.ci/run`
/// starts a throwaway cluster with `.ci/postgres` and sets it). The
/// end-to-end tests have the same in `tests/common/postgres.rs`. Without it the test fails saying how to
/// get one: a driver's tests are never skipped silently.
#[cfg(test)]
pub(crate) mod test_postgres {
    use sqlx::Connection as _;

    pub const URL_VAR: &str = "KEEPER_TEST_POSTGRES_URL";

    /// The URL of a new, empty database.
    pub async fn fresh_database() -> String {
        let admin = std::env::var(URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{URL_VAR} is not set: the PostgreSQL driver's tests need a server. Run them through .ci/run, \
                 or start a throwaway cluster with `eval \"$(.ci/postgres start)\"` (stop it with `.ci/postgres stop`)"
            )
        });
        let name = format!("keeper_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR} ({admin}): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin}: {e}"));
        let _ = conn.close().await;
        with_database(&admin, &name)
    }

    /// `url` with its database replaced by `name`.
    fn with_database(url: &str, name: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (rest, query) = rest.split_once('?').map_or((rest, None), |(r, q)| (r, Some(q)));
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        match query {
            Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
            None => format!("{scheme}://{authority}/{name}"),
        }
    }

    #[test]
    fn the_database_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_parameters_become_sqlites_numbered_ones_and_nothing_else_changes() {
        assert_eq!(
            super::sqlite_params("SELECT $1, $12 FROM t WHERE a = '$' AND b = $2"),
            "SELECT ?1, ?12 FROM t WHERE a = '$' AND b = ?2"
        );
    }

    #[tokio::test]
    async fn a_row_struct_reads_its_columns_renamed_and_converted_and_refuses_what_does_not_fit() {
        use sqlx::Connection as _;

        use crate::queue::ClaimedItem;

        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("memory db");
        let item: ClaimedItem = sqlx::query_as("SELECT 7 AS id, 8 AS discovery_id, 2 AS attempts, 1 AS backfill")
            .fetch_one(&mut conn)
            .await
            .expect("a row that fits");
        assert_eq!(
            (item.queue_id, item.discovery_id, item.attempts, item.backfill),
            (7, 8, 2, true)
        );

        // Attempts are a u32 stored as an integer: a negative count is a
        // decode error naming the column, not a wrapped number.
        let negative =
            sqlx::query_as::<_, ClaimedItem>("SELECT 7 AS id, 8 AS discovery_id, -1 AS attempts, 0 AS backfill")
                .fetch_one(&mut conn)
                .await
                .expect_err("-1 attempts do not fit a u32");
        assert!(negative.to_string().contains("attempts"), "{negative}");

        // `queue_id` is read from the column `id`, and only from it.
        let unnamed =
            sqlx::query_as::<_, ClaimedItem>("SELECT 7 AS queue_id, 8 AS discovery_id, 2 AS attempts, 0 AS backfill")
                .fetch_one(&mut conn)
                .await
                .expect_err("no column id");
        assert!(unnamed.to_string().ends_with("name: id"), "{unnamed}");
        conn.close().await.expect("close");
    }
}
