//! What a SQLite error means, read from its result code rather than its
//! message text: the text changes between SQLite versions and says
//! "disk I/O error (code 4874)" where an operator needs "disk full".
//! Both databases (keeper.db and VH-Database) classify through [`Fault::of`].
//! A PostgreSQL store's errors (`KEEPER_DATABASE_URL`) are classified by
//! their SQLSTATE into the same kinds ([`Fault::of_sqlstate`]).

/// SQLite's primary result codes we tell apart (sqlite.org/rescode.html).
const SQLITE_PERM: i64 = 3;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_NOTADB: i64 = 26;
/// Extended codes of SQLITE_IOERR that mean "the disk has no room": the
/// shared-memory file of a WAL database could not grow.
const SQLITE_IOERR_SHMSIZE: i64 = SQLITE_IOERR | (19 << 8);

/// The kind of a SQLite failure, as far as an operator's next step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock past
    /// the busy timeout. Passes when it lets go.
    Busy,
    /// SQLITE_FULL (or the WAL index could not grow): the disk or the
    /// quota is full.
    Full,
    /// SQLITE_READONLY or SQLITE_PERM: the file, its folder or the mount is
    /// not writable for this process.
    ReadOnly,
    /// SQLITE_CORRUPT: some pages of the file are damaged.
    Corrupt,
    /// SQLITE_NOTADB: the file is not a SQLite database (or is encrypted).
    NotADatabase,
    /// SQLITE_CANTOPEN: the file or its folder cannot be opened.
    CantOpen,
    /// Another SQLITE_IOERR: the operating system failed a read or write.
    Io,
    /// Anything else (a constraint, a missing table, a bug).
    Other,
}

impl Fault {
    /// Classifies by the extended result code SQLite returned.
    pub fn of(error: &sqlx::Error) -> Fault {
        match error {
            sqlx::Error::Database(db) => match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                Some(pg) => Fault::of_sqlstate(pg.code()),
                None => db
                    .code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .map_or(Fault::Other, Fault::from_code),
            },
            sqlx::Error::Io(_) => Fault::Io,
            _ => Fault::Other,
        }
    }

    /// Classifies a PostgreSQL SQLSTATE (postgresql.org/docs/current/errcodes-appendix.html).
    pub fn of_sqlstate(code: &str) -> Fault {
        match code {
            "53100" => Fault::Full,
            "25006" => Fault::ReadOnly,
            "55P03" | "40P01" | "40001" => Fault::Busy,
            "XX001" | "XX002" => Fault::Corrupt,
            "57P01" | "57P02" | "57P03" => Fault::Io,
            _ if code.starts_with("08") => Fault::Io,
            _ => Fault::Other,
        }
    }

    /// Classifies an extended (or primary) result code.
    pub fn from_code(code: i64) -> Fault {
        if code == SQLITE_IOERR_SHMSIZE {
            return Fault::Full;
        }
        match code & 0xff {
            SQLITE_BUSY | SQLITE_LOCKED => Fault::Busy,
            SQLITE_FULL => Fault::Full,
            SQLITE_READONLY | SQLITE_PERM => Fault::ReadOnly,
            SQLITE_CORRUPT => Fault::Corrupt,
            SQLITE_NOTADB => Fault::NotADatabase,
            SQLITE_CANTOPEN => Fault::CantOpen,
            SQLITE_IOERR => Fault::Io,
            _ => Fault::Other,
        }
    }

    /// What happened, in the words an operator acts on.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Busy => "database is locked",
            Fault::Full => "disk full",
            Fault::ReadOnly => "the database is read-only for keeper (file, folder or mount not writable)",
            Fault::Corrupt => "the database file is damaged (database disk image is malformed)",
            Fault::NotADatabase => "the file is not a SQLite database",
            Fault::CantOpen => "the file cannot be opened",
            Fault::Io => "disk I/O error",
            Fault::Other => "database error",
        }
    }
}

/// The message of a SQLite error without sqlx's wrapping ("error returned
/// from database: (code: N) ...").
pub fn message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, SqliteConnection};

    #[test]
    fn extended_codes_map_to_their_primary_class() {
        assert_eq!(Fault::from_code(5), Fault::Busy);
        assert_eq!(Fault::from_code(6 | (1 << 8)), Fault::Busy);
        assert_eq!(Fault::from_code(8 | (3 << 8)), Fault::ReadOnly);
        assert_eq!(Fault::from_code(11 | (1 << 8)), Fault::Corrupt);
        assert_eq!(Fault::from_code(13), Fault::Full);
        assert_eq!(Fault::from_code(4874), Fault::Full, "SQLITE_IOERR_SHMSIZE");
        assert_eq!(Fault::from_code(10 | (3 << 8)), Fault::Io);
        assert_eq!(Fault::from_code(14), Fault::CantOpen);
        assert_eq!(Fault::from_code(26), Fault::NotADatabase);
        assert_eq!(Fault::from_code(19), Fault::Other);
    }

    /// Real SQLite errors, made on purpose, classify as what they are.
    #[tokio::test]
    async fn real_errors_are_classified_by_their_code() {
        let dir = tempfile::tempdir().expect("temp dir");

        // SQLITE_FULL: a database not allowed to grow past its pages.
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("memory db");
        sqlx::raw_sql("CREATE TABLE t (x TEXT); PRAGMA max_page_count = 3")
            .execute(&mut conn)
            .await
            .expect("setup");
        let full =
            sqlx::query("INSERT INTO t SELECT hex(randomblob(2000)) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3)")
                .execute(&mut conn)
                .await
                .expect_err("the database is full");
        assert_eq!(Fault::of(&full), Fault::Full, "{full}");

        // SQLITE_READONLY: a write on a read-only connection.
        let path = dir.path().join("ro.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut rw = SqliteConnection::connect_with(&options).await.expect("create");
        sqlx::query("CREATE TABLE t (x)").execute(&mut rw).await.expect("table");
        let mut ro = SqliteConnection::connect_with(&options.clone().read_only(true))
            .await
            .expect("open read-only");
        let read_only = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut ro)
            .await
            .expect_err("read-only");
        assert_eq!(Fault::of(&read_only), Fault::ReadOnly, "{read_only}");

        // SQLITE_BUSY: another connection holds the write lock.
        sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut rw).await.expect("lock");
        let busy_options = options.clone().busy_timeout(std::time::Duration::from_millis(10));
        let mut other = SqliteConnection::connect_with(&busy_options)
            .await
            .expect("second connection");
        let busy = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut other)
            .await
            .expect_err("busy");
        assert_eq!(Fault::of(&busy), Fault::Busy, "{busy}");

        // SQLITE_NOTADB: a file of other bytes.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).expect("junk file");
        let not_db = async {
            let mut c =
                SqliteConnection::connect_with(&sqlx::sqlite::SqliteConnectOptions::new().filename(&junk)).await?;
            sqlx::query("SELECT * FROM sqlite_schema").fetch_all(&mut c).await
        }
        .await
        .expect_err("not a database");
        assert_eq!(Fault::of(&not_db), Fault::NotADatabase, "{not_db}");

        // SQLITE_CANTOPEN: a folder where the file should be.
        let cant = SqliteConnection::connect_with(&sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path()))
            .await
            .expect_err("a folder is no database");
        assert_eq!(Fault::of(&cant), Fault::CantOpen, "{cant}");
    }
}
