use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Connection, Executor, Row,
    any::{AnyPoolOptions, AnyRow},
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode},
};
use verinet_primitives::{Address, IoSignature, ModelId, validate_model_name};

use crate::{
    ModelQuery, ModelSort, ModelStore, ModelSummary, ModelVersion, ModelWatch, NewModelVersion, Result, StoreError, Usage,
};

/// Schema migrations, embedded at compile time; the same files run on SQLite and PostgreSQL.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled PostgreSQL connection idle this long is pinged before it is used again.
const PG_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The SQL store: one code path over SQLite and PostgreSQL through sqlx's `Any` driver.
///
/// Queries are portable SQL with `$n` placeholders (SQLite accepts them too); the only
/// backend-specific code is connection setup. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: &'static str,
    /// A SQLite file only: the writer thread every ledger transaction goes through.
    pub(crate) ledger_writer: Option<crate::sqlite_ledger::LedgerWriter>,
    /// PostgreSQL only: where [`ModelStore::watch`] listens for other gateways' publications.
    pg_url: Option<std::sync::Arc<str>>,
}

/// How a [`SqlStore`] is opened.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// SQLite files: how long the capture or refund of an escrow held in memory may wait to be
    /// written after it is answered (zero, the default here: written before it is answered).
    /// Waiting lets one commit carry many payments. A process that dies inside the window loses
    /// those payments whole, escrow and close: the payers keep their money and their
    /// authorizations' nonces, the operator loses the fees (docs/payments.md). PostgreSQL
    /// ignores it: gateways sharing the database must see each other's payments.
    pub close_delay: std::time::Duration,
    /// Tests only: how long the SQLite committer thread waits after a group's COMMIT before it
    /// reports it, which widens the window in which an escrow check meets a written escrow both
    /// in the database and still held.
    #[cfg(feature = "test-utils")]
    pub commit_report_pause: std::time::Duration,
}

/// The PostgreSQL channel a publication is announced on (payload: the model's name).
const PUBLISHED_CHANNEL: &str = "verinet_models";

impl SqlStore {
    /// Connects and brings the schema up to date.
    ///
    /// `url` is `sqlite://path?mode=rwc` (also `sqlite::memory:`) or `postgres://...`. SQLite
    /// files run in WAL mode with a busy timeout and foreign keys on.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// [`SqlStore::connect`] with options.
    pub async fn connect_with(url: &str, opts: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgres"
        } else {
            return Err(StoreError::UnsupportedUrl { url: url.to_owned() });
        };
        let mut options = AnyPoolOptions::new();
        let mut ledger_file = None;
        if backend == "sqlite" {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            if memory {
                // The Any driver opens every connection from the URL, and each such connection
                // would get its own empty in-memory database: keep exactly one, forever.
                options = options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            } else {
                // WAL persists in the file, so setting it once, on a native connection, covers
                // every pooled one. It needs an exclusive lock, hence before the pool exists.
                let conn = SqliteConnectOptions::from_str(url)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .connect()
                    .await?;
                conn.close().await?;
                options = options.max_connections(8);
                ledger_file = Some(SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf());
            }
            options = options.after_connect(|conn: &mut AnyConnection, _| {
                Box::pin(async move {
                    let pragmas =
                        format!("PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON", SQLITE_BUSY_TIMEOUT.as_millis());
                    conn.execute(AssertSqlSafe(pragmas)).await?;
                    Ok(())
                })
            });
        }
        if backend == "postgres" {
            // sqlx pings a connection on every acquire by default: one more round trip per
            // query. A connection used within the last second is taken as it is; one idle longer
            // is pinged first, and a failed ping gets another connection.
            options = options.test_before_acquire(false).before_acquire(|conn: &mut AnyConnection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PG_PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        }
        let pool = options.connect(url).await?;
        MIGRATOR.run(&pool).await?;
        tracing::info!(backend, "store connected, schema up to date");
        let ledger_writer =
            ledger_file.map(|path| crate::sqlite_ledger::LedgerWriter::spawn(&path, SQLITE_BUSY_TIMEOUT, opts)).transpose()?;
        let pg_url = (backend == "postgres").then(|| url.into());
        Ok(Self { pool, backend, ledger_writer, pg_url })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The placeholders of a statement with many parameters (see [`Placeholders`]).
    pub(crate) fn placeholders(&self) -> Placeholders {
        Placeholders { numbered: self.backend != "sqlite", next: 1 }
    }

    /// Writes what waits in memory (answered captures and refunds, see [`StoreOptions`]), then
    /// closes every pooled connection and waits for them to finish.
    pub async fn close(&self) {
        if let Err(e) = self.flush_ledger().await {
            tracing::error!(error = %e, "writing the answered captures before closing the store");
        }
        self.pool.close().await;
    }

    /// Writes the answered captures and refunds that wait in memory (a SQLite file with a close
    /// delay); returns once they are durable.
    pub async fn flush_ledger(&self) -> Result<()> {
        match &self.ledger_writer {
            Some(w) => w.flush().await,
            None => Ok(()),
        }
    }

    async fn fetch_versions(&self, filter: &'static str, key: String) -> Result<Vec<ModelVersion>> {
        let sql =
            format!("SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.name = v.name WHERE {filter}");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(key).fetch_all(&self.pool).await?;
        rows.iter().map(version_from_row).collect()
    }
}

/// The columns [`version_from_row`] reads, from `model_versions v JOIN models m`.
const VERSION_COLUMNS: &str = "v.name, v.version, v.sha256, v.size, m.owner, v.description, v.tags, v.license, \
     v.price, v.signature, v.publish_signature, v.policy, v.token_prices, v.published_at, v.calls, v.failures, v.last_called_at";

#[async_trait]
impl ModelStore for SqlStore {
    #[tracing::instrument(level = "debug", skip_all, fields(name = %v.name, version = %v.version))]
    async fn insert_version(&self, v: &NewModelVersion) -> Result<ModelVersion> {
        validate_model_name(&v.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let row = VersionRow::new(v)?;
        let mut tx = self.pool.begin().await?;
        let mut inserted = insert_in(&mut tx, v, &row).await;
        if inserted.is_ok() && self.backend == "postgres" {
            // Delivered at COMMIT, and only if it commits: other gateways drop their cached
            // resolutions of this name. (pg_notify returns void, which the Any driver cannot
            // decode, hence the wrapping.)
            inserted = sqlx::query("SELECT length(pg_notify($1, $2)::text) AS n")
                .bind(PUBLISHED_CHANNEL)
                .bind(&v.name)
                .fetch_one(&mut *tx)
                .await
                .map(drop)
                .map_err(StoreError::from);
        }
        match inserted {
            Ok(()) => {
                tx.commit().await?;
                Ok(ModelVersion::new(v))
            }
            Err(e) => {
                // The refusal is the answer; a failed rollback only costs the connection.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(%rollback, "rolling back a refused publish");
                }
                Err(e)
            }
        }
    }

    async fn owner(&self, name: &str) -> Result<Option<Address>> {
        let row = sqlx::query("SELECT owner FROM models WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| parse_address(&r.try_get::<String, _>("owner")?)).transpose()
    }

    async fn version(&self, name: &str, version: &semver::Version) -> Result<Option<ModelVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.name = v.name \
             WHERE v.name = $1 AND v.version = $2"
        );
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(name).bind(version.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn latest(&self, name: &str) -> Result<Option<ModelVersion>> {
        let rows = self.fetch_versions("v.name = $1 AND v.version = m.latest_version", name.to_owned()).await?;
        Ok(rows.into_iter().next())
    }

    async fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let mut rows = self.fetch_versions("v.name = $1", name.to_owned()).await?;
        rows.sort_by(|a, b| b.version.cmp(&a.version));
        Ok(rows)
    }

    async fn by_id(&self, id: &ModelId) -> Result<Option<ModelVersion>> {
        let mut rows = self.fetch_versions("v.sha256 = $1", id.to_string()).await?;
        // The first publication wins (only its owner may publish the same bytes again);
        // ties broken deterministically.
        rows.sort_by(|a, b| (a.published_at_ms, &a.name, &a.version).cmp(&(b.published_at_ms, &b.name, &b.version)));
        Ok(rows.into_iter().next())
    }

    async fn list(&self, q: &ModelQuery) -> Result<Vec<ModelSummary>> {
        let mut sql = format!(
            "SELECT {VERSION_COLUMNS}, u.n_versions, u.total_calls, u.total_failures, u.last_call \
             FROM models m \
             JOIN model_versions v ON v.name = m.name AND v.version = m.latest_version \
             JOIN (SELECT name, COUNT(*) AS n_versions, CAST(SUM(calls) AS BIGINT) AS total_calls, \
                          CAST(SUM(failures) AS BIGINT) AS total_failures, \
                          MAX(last_called_at) AS last_call, MAX(published_at) AS last_published \
                   FROM model_versions GROUP BY name) u ON u.name = m.name \
             WHERE 1 = 1"
        );
        let mut binds: Vec<String> = Vec::new();
        if let Some(text) = q.q.as_deref().filter(|s| !s.is_empty()) {
            binds.push(format!("%{}%", escape_like(&text.to_lowercase())));
            sql += &format!(" AND v.search LIKE ${} ESCAPE '\\'", binds.len());
        }
        if let Some(tag) = &q.tag {
            binds.push(tag.clone());
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM model_tags t WHERE t.name = v.name AND t.version = v.version AND t.tag = ${})",
                binds.len()
            );
        }
        sql += match q.sort {
            ModelSort::Usage => " ORDER BY u.total_calls DESC, m.sort_key",
            ModelSort::Name => " ORDER BY m.sort_key",
            ModelSort::Newest => " ORDER BY u.last_published DESC, m.sort_key",
        };
        sql += &format!(" LIMIT ${} OFFSET ${}", binds.len() + 1, binds.len() + 2);

        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.bind(i64::from(q.effective_limit())).bind(i64::from(q.offset)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let latest = version_from_row(r)?;
                Ok(ModelSummary {
                    name: latest.name.clone(),
                    owner: latest.owner,
                    versions: u32::try_from(r.try_get::<i64, _>("n_versions")?)
                        .map_err(|_| StoreError::Corrupt("version count out of range".into()))?,
                    usage: Usage {
                        calls: counter(r, "total_calls")?,
                        failures: counter(r, "total_failures")?,
                        last_called_at_ms: r.try_get("last_call")?,
                    },
                    latest,
                })
            })
            .collect()
    }

    async fn record_calls(
        &self,
        name: &str,
        version: &semver::Version,
        calls: u64,
        failures: u64,
        at_ms: i64,
    ) -> Result<()> {
        let count = |n: u64| i64::try_from(n).map_err(|_| StoreError::Invalid(format!("count {n} out of range")));
        // One statement, so the increment is atomic on both backends.
        let done = sqlx::query(
            "UPDATE model_versions SET calls = calls + $1, failures = failures + $2, \
             last_called_at = CASE WHEN last_called_at IS NULL OR last_called_at < $3 THEN $3 ELSE last_called_at END \
             WHERE name = $4 AND version = $5",
        )
        .bind(count(calls)?)
        .bind(count(failures)?)
        .bind(at_ms)
        .bind(name)
        .bind(version.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("model {name}@{version}")));
        }
        Ok(())
    }

    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<ModelWatch>> {
        let url = self.pg_url.clone()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(listen_for_publications(url, tx));
        Some(rx)
    }
}

/// LISTENs on [`PUBLISHED_CHANNEL`] and reports what it hears, reconnecting (every second
/// at most) when the connection drops, until the receiver goes away.
async fn listen_for_publications(url: std::sync::Arc<str>, tx: tokio::sync::mpsc::Sender<ModelWatch>) {
    loop {
        let listening = async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await?;
            l.listen(PUBLISHED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match listening.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listening for other gateways' publications failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = tx.closed() => return,
                }
            }
        };
        if tx.send(ModelWatch::Listening).await.is_err() {
            return;
        }
        loop {
            let heard = tokio::select! {
                heard = listener.try_recv() => heard,
                _ = tx.closed() => return,
            };
            let event = match heard {
                Ok(Some(n)) => ModelWatch::Published { name: n.payload().to_owned() },
                // The connection dropped; what was sent meanwhile is lost.
                Ok(None) | Err(_) => ModelWatch::Lost,
            };
            let lost = event == ModelWatch::Lost;
            if tx.send(event).await.is_err() {
                return;
            }
            if lost {
                break;
            }
        }
    }
}

/// The body of the publish transaction; the caller commits or rolls back.
async fn insert_in(tx: &mut AnyConnection, v: &NewModelVersion, row: &VersionRow) -> Result<()> {
    // Claim the name or lock its row: the no-op DO UPDATE takes the row lock on PostgreSQL (and
    // the write lock on SQLite) so concurrent publishers of one name queue here, then see the
    // committed owner. Writing first also spares SQLite a read-to-write lock upgrade.
    let claimed = sqlx::query(
        "INSERT INTO models (name, owner, latest_version, sort_key, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET owner = models.owner RETURNING owner, latest_version",
    )
    .bind(&v.name)
    .bind(&row.owner)
    .bind(&row.version)
    .bind(sort_key(&v.name))
    .bind(v.published_at_ms)
    .fetch_one(&mut *tx)
    .await?;
    let owner = parse_address(&claimed.try_get::<String, _>("owner")?)?;
    if owner != v.owner {
        return Err(StoreError::NotOwner { name: v.name.clone(), owner });
    }
    let latest = parse_version(&claimed.try_get::<String, _>("latest_version")?)?;

    // Claim the bytes (or find their first publisher), in the same transaction.
    let first = sqlx::query(
        "INSERT INTO content_owners (sha256, owner, name, published_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO UPDATE SET owner = content_owners.owner RETURNING owner, name",
    )
    .bind(v.id.to_string())
    .bind(&row.owner)
    .bind(&v.name)
    .bind(v.published_at_ms)
    .fetch_one(&mut *tx)
    .await?;
    let content_owner = parse_address(&first.try_get::<String, _>("owner")?)?;
    if content_owner != v.owner {
        return Err(StoreError::ContentOwned { id: v.id.to_string(), owner: content_owner, name: first.try_get("name")? });
    }

    let inserted = sqlx::query(
        "INSERT INTO model_versions (name, version, major, minor, patch, pre, sha256, size, description, tags, \
         license, price, signature, publish_signature, published_at, search, policy, token_prices) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         ON CONFLICT (name, version) DO NOTHING",
    )
    .bind(&v.name)
    .bind(&row.version)
    .bind(row.major)
    .bind(row.minor)
    .bind(row.patch)
    .bind(v.version.pre.as_str())
    .bind(v.id.to_string())
    .bind(row.size)
    .bind(&v.description)
    .bind(&row.tags)
    .bind(&v.license)
    .bind(v.price.to_string())
    .bind(&row.signature)
    .bind(&v.publish_signature)
    .bind(v.published_at_ms)
    .bind(&row.search)
    .bind(v.policy.as_deref())
    .bind(v.token_prices.map(|p| serde_json::to_string(&p).unwrap_or_default()))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::VersionExists { name: v.name.clone(), version: v.version.clone() });
    }

    let mut tags: Vec<&String> = v.tags.iter().collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        sqlx::query("INSERT INTO model_tags (name, version, tag) VALUES ($1, $2, $3)")
            .bind(&v.name)
            .bind(&row.version)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    }

    if v.version > latest {
        sqlx::query("UPDATE models SET latest_version = $1 WHERE name = $2")
            .bind(&row.version)
            .bind(&v.name)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The column values of a new version that need converting before they are bound.
struct VersionRow {
    owner: String,
    version: String,
    major: i64,
    minor: i64,
    patch: i64,
    size: i64,
    tags: String,
    signature: String,
    search: String,
}

impl VersionRow {
    fn new(v: &NewModelVersion) -> Result<Self> {
        let int = |n: u64, what: &str| {
            i64::try_from(n)
                .map_err(|_| StoreError::Invalid(format!("{what} {n} does not fit a signed 64-bit integer")))
        };
        let tags = serde_json::to_string(&v.tags).map_err(|e| StoreError::Invalid(format!("tags: {e}")))?;
        let signature =
            serde_json::to_string(&v.signature).map_err(|e| StoreError::Invalid(format!("signature: {e}")))?;
        let search = format!("{}\n{}\n{}", v.name, v.description, v.tags.join("\n")).to_lowercase();
        Ok(Self {
            owner: address_text(&v.owner),
            version: v.version.to_string(),
            major: int(v.version.major, "major version")?,
            minor: int(v.version.minor, "minor version")?,
            patch: int(v.version.patch, "patch version")?,
            size: int(v.size, "size")?,
            tags,
            signature,
            search,
        })
    }
}

fn version_from_row(r: &AnyRow) -> Result<ModelVersion> {
    let text = |col: &str| -> Result<String> { Ok(r.try_get::<String, _>(col)?) };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let name = text("name")?;
    let size: i64 = r.try_get("size")?;
    Ok(ModelVersion {
        version: parse_version(&text("version")?)?,
        id: text("sha256")?.parse().map_err(|e| corrupt("sha256", &e))?,
        size: u64::try_from(size).map_err(|e| corrupt("size", &e))?,
        owner: parse_address(&text("owner")?)?,
        description: text("description")?,
        tags: serde_json::from_str(&text("tags")?).map_err(|e| corrupt("tags", &e))?,
        license: text("license")?,
        price: text("price")?.parse().map_err(|e| corrupt("price", &e))?,
        signature: serde_json::from_str::<IoSignature>(&text("signature")?).map_err(|e| corrupt("signature", &e))?,
        publish_signature: text("publish_signature")?,
        policy: r.try_get("policy")?,
        token_prices: r
            .try_get::<Option<String>, _>("token_prices")?
            .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("token_prices", &e)))
            .transpose()?,
        published_at_ms: r.try_get("published_at")?,
        usage: Usage {
            calls: counter(r, "calls")?,
            failures: counter(r, "failures")?,
            last_called_at_ms: r.try_get("last_called_at")?,
        },
        name,
    })
}

fn counter(r: &AnyRow, col: &str) -> Result<u64> {
    let n: i64 = r.try_get(col)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{col} is negative: {n}")))
}

fn parse_version(s: &str) -> Result<semver::Version> {
    semver::Version::parse(s).map_err(|e| StoreError::Corrupt(format!("version {s:?}: {e}")))
}

pub(crate) fn parse_address(s: &str) -> Result<Address> {
    Address::from_str(s).map_err(|e| StoreError::Corrupt(format!("address {s:?}: {e}")))
}

/// Lowercase `0x` hex, not the EIP-55 checksum form, so equal addresses are equal text.
pub(crate) fn address_text(a: &Address) -> String {
    format!("{a:#x}")
}

fn sort_key(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Makes `%`, `_` and the escape character itself literal in a `LIKE ... ESCAPE '\'` pattern.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_lowercase_hex() {
        let a = Address::from_str("0x52908400098527886E0F7030069857D2E4169EE7").unwrap();
        assert_eq!(address_text(&a), "0x52908400098527886e0f7030069857d2e4169ee7");
        assert_eq!(parse_address(&address_text(&a)).unwrap(), a);
    }

    #[test]
    fn sort_key_keeps_byte_order() {
        let mut names = ["a-z", "ab", "a.b", "a_b", "a0", "b", "a"];
        let mut keys: Vec<String> = names.iter().map(|n| sort_key(n)).collect();
        names.sort();
        keys.sort();
        assert_eq!(keys, names.iter().map(|n| sort_key(n)).collect::<Vec<_>>());
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}

/// Placeholders for statements of many rows or ids, numbered in the order they are bound.
///
/// PostgreSQL needs `$n`. SQLite gets anonymous `?`: it finds a named (`$n`) parameter by a
/// linear search of all of a statement's names, when it prepares the statement and again when
/// sqlx asks each parameter's name to bind it, so a statement of 1,200 `$n` cost quadratic time
/// (the receipt sealer's inserts: a third of the sqlx thread's CPU on the free path).
pub(crate) struct Placeholders {
    numbered: bool,
    next: usize,
}

impl Placeholders {
    /// The next `n` placeholders, comma-separated.
    pub(crate) fn list(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 5);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            if self.numbered {
                out.push('$');
                out.push_str(&self.next.to_string());
            } else {
                out.push('?');
            }
            self.next += 1;
        }
        out
    }

    /// `rows` parenthesised groups of the next `cols` placeholders each, comma-separated.
    pub(crate) fn rows(&mut self, rows: usize, cols: usize) -> String {
        (0..rows).map(|_| format!("({})", self.list(cols))).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::Placeholders;

    #[test]
    fn numbered_for_postgres_anonymous_for_sqlite() {
        let mut pg = Placeholders { numbered: true, next: 1 };
        assert_eq!(pg.list(1), "$1");
        assert_eq!(pg.rows(2, 2), "($2, $3), ($4, $5)");
        let mut lite = Placeholders { numbered: false, next: 1 };
        assert_eq!(lite.list(1), "?");
        assert_eq!(lite.rows(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
