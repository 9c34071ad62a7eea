//! The console's rows: accounts, sessions and the change log (which also
//! holds every published version of a template). One copy of each query:
//! the statements are plain SQL both dialects accept, with `?` placeholders
//! that `Db` numbers for PostgreSQL, and every value bound is an integer or
//! text, so a row decodes the same way from either backend.

use chrono::{DateTime, Utc};

use super::backend::{Arg as Bound, Conn, DbRow};
use super::StoreError;

/// A backend's pool, for statements written once for both dialects.
#[derive(Clone)]
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
    OptText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}

/// A column value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Int(i64),
    Text(String),
    Null,
}

impl Cell {
    fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            Cell::Text(t) => t.parse().unwrap_or_default(),
            Cell::Null => 0,
        }
    }
    fn text(&self) -> Option<String> {
        match self {
            Cell::Text(t) => Some(t.clone()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Null => None,
        }
    }
}

impl Arg {
    /// As the backends bind it.
    fn bound(&self) -> Bound<'_> {
        match self {
            Arg::Int(i) => Bound::Int(*i),
            Arg::Text(s) => Bound::Text(s),
            Arg::OptText(s) => Bound::OptText(s.as_deref()),
        }
    }
}

/// A row's cells: each column an integer, else text, else null.
fn cells(row: &impl DbRow) -> Vec<Cell> {
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>>(i) {
                v.map_or(Cell::Null, Cell::Int)
            } else {
                row.try_get::<Option<String>>(i)
                    .ok()
                    .flatten()
                    .map_or(Cell::Null, Cell::Text)
            }
        })
        .collect()
}

impl Db {
    /// Runs one statement; the number of rows it changed.
    pub async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        let args: Vec<Bound> = args.iter().map(Arg::bound).collect();
        match self {
            Db::Sqlite(p) => p.acquire().await?.execute(sql, &args).await,
            Db::Postgres(p) => p.acquire().await?.execute(sql, &args).await,
        }
    }

    /// Every row a query returns, each as its cells in column order.
    pub async fn rows(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Vec<Cell>>, StoreError> {
        let args: Vec<Bound> = args.iter().map(Arg::bound).collect();
        Ok(match self {
            Db::Sqlite(p) => p
                .acquire()
                .await?
                .fetch(sql, &args)
                .await?
                .iter()
                .map(cells)
                .collect(),
            Db::Postgres(p) => p
                .acquire()
                .await?
                .fetch(sql, &args)
                .await?
                .iter()
                .map(cells)
                .collect(),
        })
    }
}

/// A console account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: String,
    pub locale: Option<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A live session, found by the hash of its cookie.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user: UserRecord,
    pub csrf: String,
    pub last_seen: DateTime<Utc>,
}

/// One change made through the console (or its /v1 routes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `template`, `settings`, `hold`, `opt_out`, `user`, `messages`, `pause`...
    pub kind: String,
    /// What was changed, e.g. `en/late_firm/sms`.
    pub subject: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub summary: String,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

const USER_COLUMNS: &str = "name, role, password_hash, locale, disabled, created_at";

fn user_of(r: &[Cell]) -> UserRecord {
    UserRecord {
        name: r[0].text().unwrap_or_default(),
        role: r[1].text().unwrap_or_default(),
        password_hash: r[2].text().unwrap_or_default(),
        locale: r[3].text(),
        disabled: r[4].int() != 0,
        created_at: at(r[5].int()),
    }
}

fn change_of(r: &[Cell]) -> ChangeRecord {
    ChangeRecord {
        id: r[0].int(),
        at: at(r[1].int()),
        actor: r[2].text().unwrap_or_default(),
        kind: r[3].text().unwrap_or_default(),
        subject: r[4].text().unwrap_or_default(),
        before: r[5].text(),
        after: r[6].text(),
        summary: r[7].text().unwrap_or_default(),
    }
}

const CHANGE_COLUMNS: &str = "id, at, actor, kind, subject, before, after, summary";

impl Db {
    /// Adds an account; false if the name is taken.
    pub async fn add_user(&self, now: DateTime<Utc>, u: &UserRecord) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO console_users (name, role, password_hash, locale, disabled, created_at, updated_at)
                 VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (name) DO NOTHING",
                vec![
                    u.name.clone().into(),
                    u.role.clone().into(),
                    u.password_hash.clone().into(),
                    u.locale.clone().into(),
                    now.timestamp_millis().into(),
                    now.timestamp_millis().into(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {USER_COLUMNS} FROM console_users WHERE name = ?"),
                vec![name.into()],
            )
            .await?;
        Ok(rows.first().map(|r| user_of(r)))
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {USER_COLUMNS} FROM console_users ORDER BY name"),
                vec![],
            )
            .await?;
        Ok(rows.iter().map(|r| user_of(r)).collect())
    }

    /// Sets a new password hash; the account's sessions end. False if no
    /// such account.
    pub async fn set_password(
        &self,
        now: DateTime<Utc>,
        name: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE console_users SET password_hash = ?, updated_at = ? WHERE name = ?",
                vec![hash.into(), now.timestamp_millis().into(), name.into()],
            )
            .await?;
        self.end_sessions_of(name).await?;
        Ok(n == 1)
    }

    /// Disables (or enables) an account; disabling ends its sessions.
    pub async fn set_disabled(
        &self,
        now: DateTime<Utc>,
        name: &str,
        disabled: bool,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE console_users SET disabled = ?, updated_at = ? WHERE name = ?",
                vec![
                    i64::from(disabled).into(),
                    now.timestamp_millis().into(),
                    name.into(),
                ],
            )
            .await?;
        if disabled {
            self.end_sessions_of(name).await?;
        }
        Ok(n == 1)
    }

    pub async fn set_locale(&self, name: &str, locale: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE console_users SET locale = ? WHERE name = ?",
            vec![locale.into(), name.into()],
        )
        .await?;
        Ok(())
    }

    async fn end_sessions_of(&self, name: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM console_sessions WHERE user_name = ?",
            vec![name.into()],
        )
        .await?;
        Ok(())
    }

    pub async fn add_session(
        &self,
        now: DateTime<Utc>,
        token_hash: &str,
        user: &str,
        csrf: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO console_sessions (token_hash, user_name, csrf, created_at, last_seen) VALUES (?, ?, ?, ?, ?)",
            vec![
                token_hash.into(),
                user.into(),
                csrf.into(),
                now.timestamp_millis().into(),
                now.timestamp_millis().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The live session of `token_hash`, touched at `now` (at most once a
    /// minute, so reading pages does not write on every request). A session
    /// idle since before `idle_since`, or of a disabled account, is deleted
    /// and not returned.
    pub async fn session(
        &self,
        now: DateTime<Utc>,
        token_hash: &str,
        idle_since: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT u.name, u.role, u.password_hash, u.locale, u.disabled, u.created_at, s.csrf, s.last_seen
                 FROM console_sessions s JOIN console_users u ON u.name = s.user_name
                 WHERE s.token_hash = ?",
                vec![token_hash.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let user = user_of(r);
        let last_seen = at(r[7].int());
        if user.disabled || last_seen < idle_since {
            self.end_session(token_hash).await?;
            return Ok(None);
        }
        if now - last_seen > chrono::Duration::minutes(1) {
            self.execute(
                "UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?",
                vec![now.timestamp_millis().into(), token_hash.into()],
            )
            .await?;
        }
        Ok(Some(SessionRecord {
            user,
            csrf: r[6].text().unwrap_or_default(),
            last_seen,
        }))
    }

    /// Deletes every session idle since before `idle_since` (at each login).
    pub async fn end_idle_sessions(&self, idle_since: DateTime<Utc>) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM console_sessions WHERE last_seen < ?",
            vec![idle_since.timestamp_millis().into()],
        )
        .await?;
        Ok(())
    }

    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?",
            vec![token_hash.into()],
        )
        .await?;
        Ok(())
    }

    /// Records a change; its id.
    pub async fn record_change(&self, c: &ChangeRecord) -> Result<i64, StoreError> {
        let rows = self
            .rows(
                "INSERT INTO console_changes (at, actor, kind, subject, before, after, summary)
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                vec![
                    c.at.timestamp_millis().into(),
                    c.actor.clone().into(),
                    c.kind.clone().into(),
                    c.subject.clone().into(),
                    c.before.clone().into(),
                    c.after.clone().into(),
                    c.summary.clone().into(),
                ],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r[0].int()))
    }

    /// Changes of one kind and subject, newest first.
    pub async fn changes_of(
        &self,
        kind: &str,
        subject: &str,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {CHANGE_COLUMNS} FROM console_changes WHERE kind = ? AND subject = ? ORDER BY id DESC"),
                vec![kind.into(), subject.into()],
            )
            .await?;
        Ok(rows.iter().map(|r| change_of(r)).collect())
    }

    pub async fn change(&self, id: i64) -> Result<Option<ChangeRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {CHANGE_COLUMNS} FROM console_changes WHERE id = ?"),
                vec![id.into()],
            )
            .await?;
        Ok(rows.first().map(|r| change_of(r)))
    }

    /// Every change in `[from, to)`, oldest first.
    pub async fn changes(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {CHANGE_COLUMNS} FROM console_changes WHERE at >= ? AND at < ? ORDER BY id"),
                vec![from.timestamp_millis().into(), to.timestamp_millis().into()],
            )
            .await?;
        Ok(rows.iter().map(|r| change_of(r)).collect())
    }
}

/// A borrower found by a console search (addresses masked by the caller).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BorrowerHit {
    pub external_id: String,
    pub name: String,
    pub active_loans: i64,
    /// (channel, address) of the borrower's current contact points.
    pub contacts: Vec<(String, String)>,
}

impl Db {
    /// Borrowers whose id is `q`, or who have (had) the address `q`
    /// (already normalised: E.164 phone, lower-case email); at most 50.
    pub async fn find_borrowers(&self, q: &str) -> Result<Vec<BorrowerHit>, StoreError> {
        let rows = self
            .rows(
                "SELECT b.id, b.external_id, b.name,
                        (SELECT COUNT(*) FROM loans l WHERE l.borrower_id = b.id AND l.status = 'active')
                 FROM borrowers b
                 WHERE b.external_id = ?
                    OR b.id IN (SELECT borrower_id FROM contact_points WHERE address = ?)
                 ORDER BY b.external_id LIMIT 50",
                vec![q.into(), q.into()],
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let contacts = self
                .rows(
                    "SELECT channel, address FROM contact_points WHERE borrower_id = ? AND active = 1 ORDER BY channel, address",
                    vec![r[0].int().into()],
                )
                .await?
                .iter()
                .map(|c| (c[0].text().unwrap_or_default(), c[1].text().unwrap_or_default()))
                .collect();
            out.push(BorrowerHit {
                external_id: r[1].text().unwrap_or_default(),
                name: r[2].text().unwrap_or_default(),
                active_loans: r[3].int(),
                contacts,
            });
        }
        Ok(out)
    }
}

impl Db {
    /// Message state changes since `since`, counted by the state entered
    /// and its reason: what was sent, deferred and suppressed today.
    pub async fn transitions_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT to_state, reason, COUNT(*) FROM message_events WHERE at >= ?
                 GROUP BY to_state, reason ORDER BY to_state, reason",
                vec![since.timestamp_millis().into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r[0].text().unwrap_or_default(), r[1].text(), r[2].int()))
            .collect())
    }
}
