//! `[index] url = "postgresql://..."`: reading the URL, finding its password the way
//! PostgreSQL's own tools do, and the one function that renders a URL for a message.
//!
//! Compiled in every build (a build without the `postgres` feature must still recognise
//! such a URL to refuse it with a clear message, and must never echo its password).
//!
//! The password comes, first match wins, from the URL, `$PGPASSWORD`, or the password file
//! (`$PGPASSFILE`, else `~/.pgpass`), as libpq documents it: lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaped,
//! a socket directory matching `localhost`; a file that group or others can read is ignored
//! with a warning (libpq does the same), since the `postgres` crate reads none of this.

use std::fmt;
use std::path::{Path, PathBuf};

/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

/// A password: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where a PostgreSQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A Unix socket directory (`?host=/run/postgresql`).
    Socket(PathBuf),
}

/// A parsed `postgresql://` URL. Its `Display` and `Debug` are built from the parsed parts,
/// never from the text: printing one never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    pub host: Host,
    pub port: u16,
    /// Whether the URL spelled the port (shown only then).
    port_given: bool,
    pub dbname: String,
    pub connect_timeout_s: Option<u64>,
    /// `sslmode` and `application_name` as written: not secret, shown.
    shown_params: Vec<(&'static str, String)>,
    password: Option<Secret>,
}

/// What a URL may spell, for the message when it spells something else.
pub const URL_FORM: &str = "write it as postgresql://USER@HOST:PORT/DATABASE (HOST may be left out for the local socket: postgresql://USER@/DATABASE?host=/run/postgresql); put the password in ~/.pgpass or $PGPASSWORD rather than in the URL (in a URL, %-escape any of # ? / & @ : % in it, e.g. # as %23)";

/// Whether `text` names a PostgreSQL server (rather than, say, a path).
pub fn is_postgres(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgresql://") || lower.starts_with("postgres://")
}

/// `text` as it may be shown to a person: a URL that parses is rebuilt from its parts
/// (without the password); any other `scheme://` text is shown as its scheme only, since
/// where a password ends in text that does not parse cannot be known (a `#`, `?`, `/` or
/// `&` in it moves every boundary). Text without `://` (a path) is returned as is. The one
/// function that renders an index location given as text; a parsed [`PgUrl`] prints itself.
pub fn redact(text: &str) -> String {
    match text.find("://") {
        None => text.to_string(),
        Some(at) => match PgUrl::parse_alone(text) {
            Ok(url) => url.to_string(),
            Err(_) => format!("{}://(not shown: it does not parse)", &text[..at]),
        },
    }
}

/// `text` %-escaped so that it reads back as one URL part.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgresql://{}@", percent_encode(&self.user))?;
        let mut params: Vec<(&str, String)> = Vec::new();
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]")?,
            Host::Tcp(h) => f.write_str(&percent_encode(h))?,
            Host::Socket(dir) => params.push(("host", dir.display().to_string())),
        }
        if self.port_given {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", percent_encode(&self.dbname))?;
        if let Some(s) = self.connect_timeout_s {
            params.push(("connect_timeout", s.to_string()));
        }
        params.extend(self.shown_params.iter().map(|(k, v)| (*k, v.clone())));
        for (i, (key, value)) in params.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            // A socket directory keeps its slashes readable.
            let value = if *key == "host" {
                value.clone()
            } else {
                percent_encode(value)
            };
            write!(f, "{sep}{key}={value}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

/// What the environment says about passwords, captured once at start-up.
#[derive(Debug, Clone, Default)]
pub struct PasswordSources {
    /// `$PGPASSWORD`.
    pub env_password: Option<Secret>,
    /// `$PGPASSFILE`, else `~/.pgpass` (`None` without a home directory).
    pub passfile: Option<PathBuf>,
}

impl PasswordSources {
    pub fn from_process() -> PasswordSources {
        let passfile = std::env::var_os("PGPASSFILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| Path::new(&home).join(".pgpass"))
            });
        PasswordSources {
            env_password: std::env::var("PGPASSWORD")
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret),
            passfile,
        }
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a % in it is not followed by two hex digits".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape in it is not UTF-8".to_string())
}

impl PgUrl {
    /// Parses `text`; `sources` give the password when the URL has none. The error says
    /// what is wrong and never contains the password.
    pub fn parse(text: &str, sources: &PasswordSources) -> Result<PgUrl, String> {
        let mut url = PgUrl::parse_alone(text)?;
        url.find_password(sources);
        Ok(url)
    }

    /// When the URL has no password: the first of `$PGPASSWORD` and a matching password-file
    /// line.
    pub fn find_password(&mut self, sources: &PasswordSources) {
        if self.password.is_none() {
            self.password = sources.env_password.clone().or_else(|| {
                sources
                    .passfile
                    .as_deref()
                    .and_then(|f| self.lookup_passfile(f))
            });
        }
    }

    /// Parses `text` with only the password it spells itself.
    pub fn parse_alone(text: &str) -> Result<PgUrl, String> {
        if text.chars().any(char::is_control) {
            return Err("it contains a control character".into());
        }
        // Every other PostgreSQL tool ends the URL at a `#`: a password with one in it would
        // be cut there, and where it ends could not be shown safely.
        if text.contains('#') {
            return Err("it contains a # (in a password, write it %-escaped as %23)".into());
        }
        let rest = text
            .strip_prefix("postgresql://")
            .or_else(|| text.strip_prefix("postgres://"))
            .ok_or_else(|| "it does not start with postgresql://".to_string())?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, mut password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (Some(percent_decode(user)?), Some(percent_decode(pw)?)),
                None => (Some(percent_decode(u)?), None),
            },
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, p) = inner
                .split_once(']')
                .ok_or_else(|| "its [IPv6 address] is not closed".to_string())?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p)),
                None => (percent_decode(hostport)?, None),
            }
        };
        let port_given = port.is_some_and(|p| !p.is_empty());
        let port = match port {
            None | Some("") => DEFAULT_PORT,
            // Not echoed: in `user:secret` without an `@`, the secret reads as the port.
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    "its port is not a number from 1 to 65535 (a password with / ? & in it must be %-escaped, or this reads part of it as the port)".to_string()
                })?,
        };
        let dbname = percent_decode(path)?;
        if dbname.is_empty() {
            return Err("it names no database (the part after the last /)".into());
        }
        if dbname.contains('/') {
            // Not echoed: a `/` in an unescaped password moves the rest of the URL here.
            return Err(
                "its database name contains a / (a password with / in it must be %-escaped as %2F)"
                    .into(),
            );
        }
        let mut socket = None;
        let mut connect_timeout_s = None;
        let mut shown_params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "host" if value.starts_with('/') => socket = Some(PathBuf::from(value)),
                "host" => return Err("its host= parameter is not a socket directory (an absolute path); put a host name before the port".into()),
                "password" => password = Some(value),
                "connect_timeout" => {
                    // Values are not echoed: an unescaped `&` in a password starts a
                    // parameter with the rest of it.
                    connect_timeout_s = Some(value.parse::<u64>().map_err(|_| {
                        "its connect_timeout is not a number of seconds".to_string()
                    })?)
                }
                "sslmode" if matches!(value.as_str(), "disable" | "prefer" | "allow") => {
                    shown_params.push(("sslmode", value));
                }
                "sslmode" if matches!(value.as_str(), "require" | "verify-ca" | "verify-full") => {
                    return Err(format!(
                        "sslmode={value} needs TLS, which this beamdb does not have; use a local or trusted network, or sslmode=disable"
                    ));
                }
                "sslmode" => {
                    return Err("its sslmode is not one of disable, allow, prefer (require, verify-ca and verify-full need TLS, which this beamdb does not have)".into());
                }
                "application_name" => shown_params.push(("application_name", value)),
                _ => {
                    // The name is not echoed: after an unescaped `&` in a password it is
                    // the rest of the password.
                    return Err(
                        "it has a parameter beamdb does not know (it knows host, connect_timeout, sslmode, application_name; a password with & in it must be %-escaped as %26)".into(),
                    );
                }
            }
        }
        let host = match (socket, host.is_empty()) {
            (Some(dir), true) => Host::Socket(dir),
            (Some(_), false) => {
                return Err("it names both a host and a socket directory (host=)".into());
            }
            (None, true) => Host::Socket(PathBuf::from("/run/postgresql")),
            (None, false) => Host::Tcp(host),
        };
        let user = match user {
            Some(u) if !u.is_empty() => u,
            _ => {
                return Err(
                    "it names no user (postgresql://USER@HOST/DATABASE); beamdb does not guess one"
                        .into(),
                );
            }
        };
        Ok(PgUrl {
            user,
            host,
            port,
            port_given,
            dbname,
            connect_timeout_s,
            shown_params,
            password: password.map(Secret),
        })
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The host as the password file and messages name it.
    pub fn host_name(&self) -> String {
        match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(_) => "localhost".to_string(),
        }
    }

    /// The password for this URL in the password file at `path`, if one line matches.
    fn lookup_passfile(&self, path: &Path) -> Option<Secret> {
        let text = read_private(path)?;
        let port = self.port.to_string();
        let host = self.host_name();
        let wanted = [host.as_str(), &port, &self.dbname, &self.user];
        text.lines().find_map(|line| {
            if line.starts_with('#') || line.trim().is_empty() {
                return None;
            }
            let fields = split_passfile_line(line)?;
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| Secret(fields[4].clone()))
        })
    }
}

/// The password file's text, unless it is missing or others may read it.
fn read_private(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; it is ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The five fields of one password-file line, with `\:` and `\\` unescaped; `None` when it
/// does not have five.
fn split_passfile_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> PasswordSources {
        PasswordSources::default()
    }

    #[test]
    fn redact_drops_every_password_form() {
        assert_eq!(
            redact("postgresql://alice:s3cret@db.example:5433/beamdb"),
            "postgresql://alice@db.example:5433/beamdb"
        );
        assert_eq!(
            redact("postgresql://alice@db/x?password=s3cret&connect_timeout=3"),
            "postgresql://alice@db/x?connect_timeout=3"
        );
        assert_eq!(redact("postgresql://a:b:c@h/x"), "postgresql://a@h/x");
        assert_eq!(redact("postgresql://a:p@ss@h/x"), "postgresql://a@h/x");
        assert_eq!(
            redact("postgres://bob@/idx?host=/tmp/sock"),
            "postgresql://bob@/idx?host=/tmp/sock"
        );
        assert_eq!(redact("postgresql://u@[::1]/db"), "postgresql://u@[::1]/db");
        // Not a valid URL: nothing after the scheme.
        for bad in [
            "postgresql://a:secret",
            "postgresql://a:secret/db",
            "postgresql://u:secret@",
        ] {
            assert_eq!(redact(bad), "postgresql://(not shown: it does not parse)");
        }
        assert_eq!(redact("/srv/index.db"), "/srv/index.db");
    }

    #[test]
    fn parse_reads_every_part_and_display_hides_the_password() {
        let url = PgUrl::parse(
            "postgresql://al%40ice:pw%3A1@db.example:5433/beam%20db",
            &none(),
        )
        .unwrap();
        assert_eq!(url.user, "al@ice");
        assert_eq!(url.host, Host::Tcp("db.example".into()));
        assert_eq!(url.port, 5433);
        assert_eq!(url.dbname, "beam db");
        assert_eq!(url.password().map(Secret::expose), Some("pw:1"));
        assert!(!url.to_string().contains("pw"));
        assert!(!format!("{url:?}").contains("pw"));
        let socket = PgUrl::parse("postgres://bob@/idx?host=/tmp/sock", &none()).unwrap();
        assert_eq!(socket.host, Host::Socket("/tmp/sock".into()));
        assert_eq!(socket.port, DEFAULT_PORT);
        let v6 = PgUrl::parse("postgresql://bob@[::1]:6000/idx", &none()).unwrap();
        assert_eq!((v6.host, v6.port), (Host::Tcp("::1".into()), 6000));
    }

    #[test]
    fn parse_refuses_bad_forms_without_echoing_the_password() {
        for bad in [
            "mysql://u:hunter2@h/db",
            "postgresql://u:hunter2@h:99999/db",
            "postgresql://u:hunter2@h:port/db",
            "postgresql://u:hunter2@h/",
            "postgresql://:hunter2@h/db",
            "postgresql://u:hunter2@h/db?sslmode=require",
            "postgresql://u:hunter2@h/db?options=-c",
            "postgresql://u:hunter2@h/db\n",
            "postgresql://u:hunter2@h/a/b",
            "postgresql://u:hunter2@h/db%zz",
            "postgresql://u:hunter2/db",
        ] {
            let err = PgUrl::parse(bad, &none()).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn password_comes_from_url_then_env_then_passfile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:alice:wrong\ndb:*:idx:alice:from\\:file\\\\\n*:*:*:*:fallback\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sources = PasswordSources {
            env_password: None,
            passfile: Some(file.clone()),
        };
        let pw = |url: &str, s: &PasswordSources| {
            PgUrl::parse(url, s)
                .unwrap()
                .password()
                .map(|p| p.expose().to_string())
        };
        assert_eq!(
            pw("postgresql://alice@db/idx", &sources).as_deref(),
            Some("from:file\\")
        );
        assert_eq!(
            pw("postgresql://bob@db/idx", &sources).as_deref(),
            Some("fallback")
        );
        assert_eq!(
            pw("postgresql://alice:inurl@db/idx", &sources).as_deref(),
            Some("inurl")
        );
        let env = PasswordSources {
            env_password: Some(Secret("fromenv".into())),
            passfile: Some(file.clone()),
        };
        assert_eq!(
            pw("postgresql://alice@db/idx", &env).as_deref(),
            Some("fromenv")
        );
        // A file others can read is ignored, as libpq ignores it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pw("postgresql://alice@db/idx", &sources), None);
    }

    #[test]
    fn passfile_lines_split_on_unescaped_colons() {
        assert_eq!(
            split_passfile_line(r"h:1:d:u:p\:w"),
            Some(
                vec!["h", "1", "d", "u", "p:w"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(split_passfile_line("h:1:d:u"), None);
        // A colon in the password field needs no escape: it is the last field.
        assert_eq!(
            split_passfile_line("h:1:d:u:a:b")
                .map(|f| f[4].clone())
                .as_deref(),
            Some("a:b")
        );
    }
}

#[cfg(test)]
mod leak_tests {
    use super::*;

    /// Review #4: a password with an unescaped `#`, `?`, `/` or `&` in it, and every way the
    /// URL is shown (Display, Debug, redact of the raw text, the parse error).
    #[test]
    fn no_form_of_a_url_ever_shows_any_part_of_its_password() {
        let secret = "9secretTail";
        for text in [
            "postgresql://beamdb:Xy#9secretTail@db:5432/idx",
            "postgresql://beamdb:Xy?9secretTail@db:5432/idx",
            "postgresql://beamdb:Xy/9secretTail@db:5432/idx",
            "postgresql://beamdb:Xy&9secretTail@db:5432/idx",
            "postgresql://beamdb@db:5432/idx?password=Xy&9secretTail",
            "postgresql://beamdb@db:5432/idx?password=Xy#9secretTail",
            "postgresql://beamdb@db:5432/idx?connect_timeout=9secretTail",
            "postgresql://beamdb@db:5432/idx?sslmode=9secretTail",
            "postgresql://beamdb:9secretTail@db:5432/a/b",
            "mysql://beamdb:9secretTail@db/idx",
        ] {
            assert!(!redact(text).contains(secret), "{text}: {}", redact(text));
            match PgUrl::parse_alone(text) {
                Ok(url) => {
                    assert!(!url.to_string().contains(secret), "{text}: {url}");
                    assert!(!format!("{url:?}").contains(secret), "{text}: {url:?}");
                }
                Err(why) => assert!(!why.contains(secret), "{text}: {why}"),
            }
        }
        // A raw # is refused: it would end the URL for every other PostgreSQL tool.
        assert!(PgUrl::parse_alone("postgresql://u:a#b@h/db").is_err());
        // What is shown is built from the parsed parts and keeps the non-secret ones.
        let url = PgUrl::parse_alone(
            "postgresql://al%40ice:pw@db:5433/idx?password=x&connect_timeout=3&application_name=cron",
        )
        .unwrap();
        assert_eq!(
            url.to_string(),
            "postgresql://al%40ice@db:5433/idx?connect_timeout=3&application_name=cron"
        );
    }
}
