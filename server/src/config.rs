//! The app configuration file (`eddy serve --config app.toml`): reads the TOML, refuses unknown
//! keys with the file and line, resolves the schema (a path relative to the file, or an inline
//! table) and compiles the `[roles]` permission filters. `server/app.example.toml` documents
//! every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eddy_core::query::DocumentFilter;
use eddy_core::schema::Schema;
use eddy_core::server::view::{CollectionRules, Roles};
use serde::Deserialize;

/// Why a configuration file could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// What the operating system reported.
        message: String,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    Parse {
        /// The file.
        file: PathBuf,
        /// The line of the error, from 1, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A `[roles]` entry is not a valid permission rule.
    Roles {
        /// The file.
        file: PathBuf,
        /// The line of the entry, from 1.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The schema (file or inline) is not valid.
    Schema {
        /// The configuration file.
        file: PathBuf,
        /// Where the schema came from (its path, or `inline`).
        source: String,
        /// What is wrong with it.
        message: String,
    },
    /// The settings contradict each other or are out of range.
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, message } => {
                write!(
                    f,
                    "cannot read the config \"{}\": {message}",
                    file.display()
                )
            }
            ConfigError::Parse {
                file,
                line: Some(line),
                message,
            } => write!(f, "{}:{line}: {message}", file.display()),
            ConfigError::Parse {
                file,
                line: None,
                message,
            } => write!(f, "{}: {message}", file.display()),
            ConfigError::Roles {
                file,
                line,
                message,
            } => write!(f, "{}:{line}: [roles]: {message}", file.display()),
            ConfigError::Schema {
                file,
                source,
                message,
            } => write!(
                f,
                "{}: the schema ({source}) is not valid: {message}",
                file.display()
            ),
            ConfigError::Invalid { file, message } => write!(f, "{}: {message}", file.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which sign-in methods are enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthProviders {
    /// `POST /api/auth/anonymous`.
    pub anonymous: bool,
    /// `POST /api/auth/register` and `/api/auth/login`.
    pub email_password: bool,
}

impl Default for AuthProviders {
    fn default() -> Self {
        AuthProviders {
            anonymous: true,
            email_password: true,
        }
    }
}

/// Resource limits for sync connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest WebSocket frame accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most sessions one connection may bind.
    pub max_sessions_per_connection: usize,
    /// Connections silent for longer are closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// About how much memory the latest history entries may take (older ones are read from
    /// the database when a client that far behind needs them).
    pub history_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let engine = eddy_core::server::ServerConfig::new(Schema::default(), 0);
        Limits {
            max_message_bytes: engine.message_limits.max_message_bytes,
            max_sessions_per_connection: engine.max_sessions_per_connection,
            idle_timeout_ms: engine.idle_timeout_ms,
            history_cache_bytes: engine.history_cache_bytes,
        }
    }
}

/// A configuration file, resolved: every key is optional; command-line flags override them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    /// The app's name, logged at startup.
    pub app_id: Option<String>,
    /// The address to listen on.
    pub listen: Option<SocketAddr>,
    /// The data directory (relative paths are relative to the config file).
    pub data_dir: Option<PathBuf>,
    /// The schema the server enforces.
    pub schema: Option<Schema>,
    /// Whether clients may add collections and properties (default: only without a schema).
    pub development_mode: Option<bool>,
    /// The lifetime of access tokens, in seconds.
    pub access_token_ttl_secs: Option<u64>,
    /// Enabled sign-in methods.
    pub auth: AuthProviders,
    /// Connection limits.
    pub limits: Limits,
    /// Read and write permissions per collection.
    pub roles: Roles,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    app_id: Option<String>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    schema: Option<toml::Spanned<toml::Value>>,
    development_mode: Option<bool>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    roles: std::collections::BTreeMap<String, toml::Spanned<RawRules>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    read: toml::Value,
    write: toml::Value,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    anonymous: Option<bool>,
    email_password: Option<bool>,
    access_token_ttl_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<u64>,
    max_sessions_per_connection: Option<u64>,
    idle_timeout_secs: Option<u64>,
    history_cache_mib: Option<u64>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        .saturating_add(1)
}

/// Converts TOML to JSON for the schema reader (dates become strings).
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl FileConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses configuration `text`; `file` names it in errors and `base` resolves relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<FileConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            line: e.span().map(|span| line_of(text, span.start)),
            message: e.message().to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let schema = match raw.schema {
            None => None,
            Some(spanned) => Some(Self::schema(spanned.get_ref(), file, base)?),
        };
        if schema.is_none() && raw.development_mode == Some(false) {
            return Err(invalid(
                "development_mode = false needs a schema; set schema or remove development_mode"
                    .into(),
            ));
        }
        let mut limits = Limits::default();
        if let Some(bytes) = raw.limits.max_message_bytes {
            limits.max_message_bytes = usize::try_from(bytes)
                .ok()
                .filter(|b| *b >= 1024)
                .ok_or_else(|| {
                    invalid(format!(
                        "limits.max_message_bytes = {bytes} is out of range; use at least 1024"
                    ))
                })?;
        }
        if let Some(sessions) = raw.limits.max_sessions_per_connection {
            limits.max_sessions_per_connection = usize::try_from(sessions)
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| {
                    invalid(format!(
                        "limits.max_sessions_per_connection = {sessions} is out of range; use at least 1"
                    ))
                })?;
        }
        if let Some(secs) = raw.limits.idle_timeout_secs {
            if secs == 0 {
                return Err(invalid(
                    "limits.idle_timeout_secs = 0 would close every connection; use at least 1"
                        .into(),
                ));
            }
            limits.idle_timeout_ms = secs.saturating_mul(1000);
        }
        if let Some(mib) = raw.limits.history_cache_mib {
            limits.history_cache_bytes = mib
                .checked_mul(1 << 20)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "limits.history_cache_mib = {mib} is out of range; use a number of MiB this machine can address"
                    ))
                })?;
        }
        let mut roles = Roles::default();
        for (collection, spanned) in raw.roles {
            let roles_error = |message: String| ConfigError::Roles {
                file: file.to_path_buf(),
                line: line_of(text, spanned.span().start),
                message,
            };
            if schema
                .as_ref()
                .is_some_and(|s| s.collection(&collection).is_none())
            {
                return Err(roles_error(format!(
                    "{collection} is not a collection of the schema; name one of its collections"
                )));
            }
            let rules = spanned.get_ref();
            let filter = |which: &str, value: &toml::Value| {
                DocumentFilter::from_json(&toml_to_json(value)).map_err(|e| {
                    roles_error(format!(
                        "{collection}.{which}: {e}; write a filter such as {{ owner = \"%%user.id\" }} or true"
                    ))
                })
            };
            roles.collections.insert(
                collection.clone(),
                CollectionRules {
                    read: filter("read", &rules.read)?,
                    write: filter("write", &rules.write)?,
                },
            );
        }
        if raw.auth.access_token_ttl_secs == Some(0) {
            return Err(invalid(
                "auth.access_token_ttl_secs = 0 makes every token expired; use at least 1".into(),
            ));
        }
        Ok(FileConfig {
            app_id: raw.app_id,
            listen: raw.listen,
            data_dir: raw.data_dir.map(|d| base.join(d)),
            schema,
            development_mode: raw.development_mode,
            access_token_ttl_secs: raw.auth.access_token_ttl_secs,
            auth: AuthProviders {
                anonymous: raw.auth.anonymous.unwrap_or(true),
                email_password: raw.auth.email_password.unwrap_or(true),
            },
            limits,
            roles,
        })
    }

    /// Reads the schema: a string is a path to a schema JSON file, a table is the schema inline.
    fn schema(value: &toml::Value, file: &Path, base: &Path) -> Result<Schema, ConfigError> {
        let error = |source: String, message: String| ConfigError::Schema {
            file: file.to_path_buf(),
            source,
            message,
        };
        match value {
            toml::Value::String(path) => {
                let path = base.join(path);
                let source = format!("\"{}\"", path.display());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| error(source.clone(), e.to_string()))?;
                eddy_core::schema_json::schema_from_json(&text)
                    .map_err(|e| error(source, e.to_string()))
            }
            toml::Value::Table(_) => {
                eddy_core::schema_json::schema_from_json_value(&toml_to_json(value))
                    .map_err(|e| error("inline".into(), e.to_string()))
            }
            other => Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                message: format!(
                    "schema must be a path to a schema JSON file or a [schema] table, not {}",
                    other.type_str()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("app.toml"), Path::new("/base"))
    }

    #[test]
    fn a_full_file_is_read() {
        let config = parse(
            r#"
app_id = "todo"
listen = "127.0.0.1:9000"
data_dir = "data"
development_mode = true

[schema.Item]
primaryKey = "_id"
properties = { _id = "int", n = "int?" }

[auth]
anonymous = false
email_password = true
access_token_ttl_secs = 60

[limits]
max_message_bytes = 65536
max_sessions_per_connection = 4
idle_timeout_secs = 30
history_cache_mib = 8
"#,
        )
        .unwrap();
        assert_eq!(config.app_id.as_deref(), Some("todo"));
        assert_eq!(config.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(config.data_dir, Some(PathBuf::from("/base/data")));
        assert!(config.schema.unwrap().collections.contains_key("Item"));
        assert_eq!(config.development_mode, Some(true));
        assert_eq!(config.access_token_ttl_secs, Some(60));
        assert_eq!(
            config.auth,
            AuthProviders {
                anonymous: false,
                email_password: true
            }
        );
        assert_eq!(
            config.limits,
            Limits {
                max_message_bytes: 65536,
                max_sessions_per_connection: 4,
                idle_timeout_ms: 30_000,
                history_cache_bytes: 8 << 20,
            }
        );
    }

    #[test]
    fn an_empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, FileConfig::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("app_id = \"a\"\n\n[limits]\nmax_frames = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("app.toml:4:"), "{text}");
        assert!(text.contains("max_frames"), "{text}");
        let err = parse("colour = \"blue\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("app.toml:1:") && err.contains("colour"),
            "{err}"
        );
    }

    #[test]
    fn roles_compile_to_filters() {
        let config =
            parse("[roles.Task]\nread = { owner = \"%%user.id\" }\nwrite = true\n").unwrap();
        let rules = &config.roles.collections["Task"];
        assert!(rules.write.is_true());
        let mine = [("owner".to_owned(), eddy_core::value::Value::from("ann"))]
            .into_iter()
            .collect();
        let ann = eddy_core::server::view::user_context("ann");
        let bob = eddy_core::server::view::user_context("bob");
        assert!(rules.read.matches(&mine, &ann));
        assert!(!rules.read.matches(&mine, &bob));
    }

    #[test]
    fn bad_roles_name_their_line() {
        let err = parse(
            "app_id = \"a\"\n[roles.Task]\nread = { a = { \"$bogus\" = 1 } }\nwrite = true\n",
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Roles { line: 2, .. }), "{err}");
        let err = parse("[roles.Task]\nread = true\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn contradictions_and_bad_values_are_explained() {
        for (text, needle) in [
            ("development_mode = false", "needs a schema"),
            ("[limits]\nidle_timeout_secs = 0", "idle_timeout_secs"),
            ("[limits]\nmax_message_bytes = 10", "max_message_bytes"),
            ("[limits]\nmax_sessions_per_connection = 0", "max_sessions"),
            (
                "[limits]\nhistory_cache_mib = 18446744073709551615",
                "history_cache_mib",
            ),
            ("[auth]\naccess_token_ttl_secs = 0", "access_token_ttl_secs"),
            ("schema = 3", "schema must be"),
            ("schema = \"missing.json\"", "missing.json"),
            ("[schema.Item]\nproperties = 7", "inline"),
            ("listen = \"nowhere\"", "app.toml:1:"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_schema_file_is_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let schema = r#"{"Item": {"primaryKey": "_id", "properties": {"_id": "int"}}}"#;
        std::fs::write(dir.path().join("schema.json"), schema).unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "schema = \"schema.json\"\n").unwrap();
        let config = FileConfig::load(&file).unwrap();
        assert!(config.schema.unwrap().collections.contains_key("Item"));
        let err = FileConfig::load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("app.example.toml");
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.app_id.as_deref(), Some("todo"));
        assert!(config.schema.unwrap().collections.contains_key("Task"));
        assert_eq!(config.limits, Limits::default());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn line_of_counts_newlines(lines in 0usize..20, col in 0usize..5) {
            let text = format!("{}{}", "x\n".repeat(lines), "y".repeat(col));
            prop_assert_eq!(line_of(&text, text.len()), lines + 1);
        }
    }
}
