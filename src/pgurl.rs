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

/// A parsed `postgresql://` URL. Its `Display` and `Debug` are [`redact`]ed: printing one
/// never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    text: String,
    pub user: String,
    pub host: Host,
    pub port: u16,
    pub dbname: String,
    pub connect_timeout_s: Option<u64>,
    password: Option<Secret>,
}

/// What a URL may spell, for the message when it spells something else.
pub const URL_FORM: &str = "write it as postgresql://USER@HOST:PORT/DATABASE (HOST may be left out for the local socket: postgresql://USER@/DATABASE?host=/run/postgresql); put the password in ~/.pgpass or $PGPASSWORD rather than in the URL";

/// Whether `text` names a PostgreSQL server (rather than, say, a path).
pub fn is_postgres(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgresql://") || lower.starts_with("postgres://")
}

/// `text` with any password in it removed: `scheme://user:secret@host` becomes
/// `scheme://user@host`, and a `password=` query parameter is dropped. The one function
/// that renders a URL for a person: every message, log line and JSON field that names the
/// index goes through it. Works on text that is not a valid URL too (a parse error must not
/// echo the password it could not parse).
pub fn redact(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(at) => text.split_at(at + 3),
        None => ("", text),
    };
    // The authority ends at the first '/', '?' or '#'; its userinfo ends at its last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}{host}")
        }
        // No `@`: `user:secret` reads as host and port. A port is digits; anything else
        // after the last colon (outside an [IPv6 address]) may be a password.
        None => {
            let after = authority.rfind(']').map_or(0, |at| at + 1);
            match authority[after..].rfind(':').map(|at| at + after) {
                Some(at) if !authority[at + 1..].chars().all(|c| c.is_ascii_digit()) => {
                    format!("{}:***", &authority[..at])
                }
                _ => authority.to_string(),
            }
        }
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", redact(&self.text))
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.text))
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
        let port = match port {
            None | Some("") => DEFAULT_PORT,
            // Not echoed: in `user:secret` without an `@`, the secret reads as the port.
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| "its port is not a number from 1 to 65535".to_string())?,
        };
        let dbname = percent_decode(path)?;
        if dbname.is_empty() {
            return Err("it names no database (the part after the last /)".into());
        }
        if dbname.contains('/') {
            return Err(format!("its database name `{dbname}` contains a /"));
        }
        let mut socket = None;
        let mut connect_timeout_s = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "host" if value.starts_with('/') => socket = Some(PathBuf::from(value)),
                "host" => return Err("its host= parameter is not a socket directory (an absolute path); put a host name before the port".into()),
                "password" => password = Some(value),
                "connect_timeout" => {
                    connect_timeout_s = Some(value.parse::<u64>().map_err(|_| {
                        format!("its connect_timeout `{value}` is not a number of seconds")
                    })?)
                }
                "sslmode" if matches!(value.as_str(), "disable" | "prefer" | "allow") => {}
                "sslmode" => {
                    return Err(format!(
                        "sslmode={value} needs TLS, which this beamdb does not have; use a local or trusted network, or sslmode=disable"
                    ));
                }
                "application_name" => {}
                other => {
                    return Err(format!(
                        "it has the parameter `{other}`, which beamdb does not know (it knows host, connect_timeout, sslmode, application_name)"
                    ));
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
            text: text.to_string(),
            user,
            host,
            port,
            dbname,
            connect_timeout_s,
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
        // Not a valid URL: still no password.
        assert_eq!(redact("postgresql://a:secret"), "postgresql://a:***");
        assert_eq!(redact("postgresql://a:secret/db"), "postgresql://a:***/db");
        assert_eq!(redact("postgresql://h:5432/db"), "postgresql://h:5432/db");
        assert_eq!(redact("postgresql://[::1]/db"), "postgresql://[::1]/db");
        assert!(!redact("postgresql://u:secret@").contains("secret"));
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
