//! Which frame store a beamtime database belongs with, recorded in its `beamtime_meta`:
//! a command set up for another store (the filesystem instead of S3, another bucket or
//! prefix) refuses the beamtime (exit 2) before it looks at a frame, and an S3 store shared
//! by two beamtime databases with the same id (two data roots, one `[frames] url`) is used,
//! and repaired, by the one that owns it only (docs/s3.md).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{FrameStore, Location, StoreError};

/// `beamtime_meta` key: the store the beamtime's frames are in ([`Location::recorded`]).
const STORE_KEY: &str = "frames_store";
/// `beamtime_meta` key: the beamtime database's owner token, also in the S3 store's root
/// group attributes (under [`OWNER_ATTRIBUTE`]).
const OWNER_KEY: &str = "frames_owner";
#[cfg(feature = "s3")]
const OWNER_ATTRIBUTE: &str = "beamdb_owner";

/// What `bind` may do besides checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// Check only (a read-only command, or `verify` before its repair).
    Check,
    /// Check, then record the store (and, on S3, claim an unowned store): ingest, repair.
    Claim,
}

impl Location {
    /// The store as `beamtime_meta.frames_store` records it: `filesystem` (beside the
    /// database, wherever the data root moves), or the store's `s3://` URL.
    fn recorded(&self) -> String {
        match self {
            Location::Filesystem { .. } => "filesystem".to_string(),
            #[cfg(feature = "s3")]
            Location::S3 { .. } => self.display(),
        }
    }
}

fn meta_error(db: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Meta {
        path: db.to_path_buf(),
        source,
    }
}

fn meta(conn: &Connection, db: &Path, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT value FROM beamtime_meta WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
    .map_err(meta_error(db))
}

fn exists(conn: &Connection, db: &Path, sql: &str) -> Result<bool, StoreError> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| n != 0)
        .map_err(meta_error(db))
}

/// Refuses (exit 2, [`StoreError::Elsewhere`] / [`StoreError::OwnedElsewhere`]) the
/// beamtime in `conn` (database `db`) when its frames are not in `store` at `location`;
/// with [`Bind::Claim`], records the store (and owner) when nothing is recorded yet.
/// A beamtime from before the record is judged by its rows: `frames_group:` keys are
/// written only for S3 run groups, image_refs without any only for filesystem ones.
pub fn bind(
    conn: &Connection,
    db: &Path,
    location: &Location,
    store: &FrameStore,
    how: Bind,
) -> Result<(), StoreError> {
    let configured = location.recorded();
    let recorded = match meta(conn, db, STORE_KEY)? {
        Some(recorded) => Some(recorded),
        None if !store.is_remote()
            && exists(
                conn,
                db,
                "SELECT EXISTS (SELECT 1 FROM beamtime_meta WHERE key LIKE 'frames_group:%')",
            )? =>
        {
            Some("an S3 store (its runs name S3 run groups)".to_string())
        }
        None if store.is_remote()
            && exists(
                conn,
                db,
                "SELECT EXISTS (SELECT 1 FROM image_refs)
                   AND NOT EXISTS (SELECT 1 FROM beamtime_meta WHERE key LIKE 'frames_group:%')",
            )? =>
        {
            Some("filesystem".to_string())
        }
        None => None,
    };
    if let Some(recorded) = recorded.as_ref().filter(|r| **r != configured) {
        return Err(StoreError::Elsewhere {
            db: db.to_path_buf(),
            recorded: recorded.clone(),
            configured,
        });
    }
    let token = meta(conn, db, OWNER_KEY)?;
    #[cfg(feature = "s3")]
    let (token, unowned) = store.check_owner(db, token)?;
    #[cfg(feature = "s3")]
    let token = match (how, unowned, token) {
        (Bind::Claim, true, None) => Some(new_token(db)?),
        (_, _, token) => token,
    };
    if how == Bind::Claim {
        conn.execute(
            "INSERT INTO beamtime_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![STORE_KEY, configured],
        )
        .map_err(meta_error(db))?;
        if let Some(token) = &token {
            conn.execute(
                "INSERT INTO beamtime_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![OWNER_KEY, token],
            )
            .map_err(meta_error(db))?;
        }
        // The database records the token before the store does: a kill in between leaves
        // an unowned store that the next claim gives the same token, never a store owned
        // by a token no database holds.
        #[cfg(feature = "s3")]
        if let (true, Some(token)) = (unowned, &token) {
            store.write_owner(token)?;
        }
    }
    Ok(())
}

/// A new owner token: 128 random bits, hex.
#[cfg(feature = "s3")]
fn new_token(db: &Path) -> Result<String, StoreError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(super::io_error(
            db,
            "cannot read /dev/urandom for an owner token",
        ))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(feature = "s3")]
impl FrameStore {
    /// On an S3 store: refuses a store whose root group names another owner than `token`
    /// (the database's), or any owner when the database has none. Returns the token and
    /// whether the store has no owner yet. On the filesystem the store is the database's by
    /// place: `(token, false)`.
    fn check_owner(
        &self,
        db: &Path,
        token: Option<String>,
    ) -> Result<(Option<String>, bool), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok((token, false));
        };
        let object = format!("{}/zarr.json", remote.key);
        let root: serde_json::Value = match remote.client.get(&object)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        let owner = root
            .pointer(&format!("/attributes/{OWNER_ATTRIBUTE}"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        match (&owner, &token) {
            (None, _) => Ok((token, true)),
            (Some(owner), Some(token)) if owner == token => Ok((Some(token.clone()), false)),
            (Some(_), _) => Err(StoreError::OwnedElsewhere {
                url: remote.client.url_of(&remote.key),
                db: db.to_path_buf(),
            }),
        }
    }

    /// Writes `token` as the owner into the S3 store's root group attributes.
    fn write_owner(&self, token: &str) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let object = format!("{}/zarr.json", remote.key);
        let mut root: serde_json::Value = match remote.client.get(&object)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        if !root.is_object() {
            root = serde_json::json!({ "zarr_format": 3, "node_type": "group" });
        }
        if let Some(map) = root.as_object_mut() {
            let attributes = map
                .entry("attributes")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(attributes) = attributes.as_object_mut() {
                attributes.insert(OWNER_ATTRIBUTE.to_string(), token.into());
            }
        }
        let text =
            serde_json::to_vec_pretty(&root).map_err(super::zarr_error(Path::new(&object)))?;
        remote.client.put(&object, text)
    }
}
