//! The users file: who may connect, with which role, and the salted hash that proves it.
//!
//! One user per line, `NAME:ROLE:scram-sha-256-sp$ITERATIONS$SALT$SALTED_PASSWORD`
//! (salt and salted password in standard base64). The salted password is SCRAM-SHA-256's
//! `SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations)`, what a
//! SCRAM server needs to check a client's proof; the password itself is never stored.
//! The value is still a secret (it lets a client log in to this server), so the file is
//! written with mode 0600 and the server refuses one that others can read.
//! `#` starts a comment; blank lines are skipped.
//!
//! Roles: `reader` runs SQL over the chain tables and stored results; `analyst` may also
//! call the kernel table functions (`taint(...)`, `eth_taint(...)`, `clusters(...)`),
//! which run a whole taint or clustering job per query.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;
use rand::RngCore;

use crate::{Error, Result};

/// The scheme tag of a stored secret.
const SCHEME: &str = "scram-sha-256-sp";
/// PBKDF2 iterations for new users (PostgreSQL's default for SCRAM-SHA-256).
pub const ITERATIONS: usize = 4096;
const MAX_FILE_BYTES: u64 = 4 << 20;
const MAX_PASSWORD_BYTES: usize = 1024;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// SQL over the tables and stored results.
    Reader,
    /// A reader who may also run the kernel table functions.
    Analyst,
}

impl Role {
    /// Whether the kernel table functions are allowed.
    pub fn runs_kernels(self) -> bool {
        self == Role::Analyst
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Analyst => "analyst",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "analyst" => Ok(Role::Analyst),
            other => Err(format!("unknown role `{other}` (reader or analyst)")),
        }
    }
}

/// One user's stored secret.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// What the user may do.
    pub role: Role,
    /// PBKDF2 iterations of the salted password.
    pub iterations: usize,
    /// The salt.
    pub salt: Vec<u8>,
    /// SCRAM's SaltedPassword.
    pub salted: Vec<u8>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("role", &self.role)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl User {
    /// A new secret for `password` with a fresh random salt.
    pub fn new(role: Role, password: &str) -> Result<Self> {
        check_password(password)?;
        let mut salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salted = gen_salted_password(password, &salt, ITERATIONS);
        Ok(User {
            role,
            iterations: ITERATIONS,
            salt,
            salted,
        })
    }

    /// Whether `password` is this user's, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let candidate = gen_salted_password(password, &self.salt, self.iterations);
        constant_time_eq(&candidate, &self.salted)
    }

    fn to_line(&self, name: &str) -> String {
        format!(
            "{name}:{}:{SCHEME}${}${}${}",
            self.role,
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.salted)
        )
    }
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::Users("the password is empty".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Users(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password
        .chars()
        .any(|c| c == '\n' || c == '\r' || c == '\0')
    {
        return Err(Error::Users(
            "the password contains a line break or NUL".into(),
        ));
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Whether `name` is a valid user name: 1 to 63 of `A-Z a-z 0-9 _ . -`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The users of a server.
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
}

impl Users {
    /// Reads a users file. Errors name the file and line; a file that other users can
    /// read or write is refused (on Unix) unless `allow_shared` is set.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Users(format!("{}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::Users(format!("{}: not a file", path.display())));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::Users(format!(
                "{}: {} bytes; a users file is at most {MAX_FILE_BYTES}",
                path.display(),
                meta.len()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::Users(format!(
                    "{}: mode {:o} lets other users read it; the salted hashes are secrets (chmod 600)",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Users(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Users(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a users file (errors name the line).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut users = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("line {n}: expected NAME:ROLE:{SCHEME}$…"));
            };
            if !valid_name(name) {
                return Err(format!(
                    "line {n}: user name `{}` is not 1–63 of A-Z a-z 0-9 _ . -",
                    name.escape_debug()
                ));
            }
            let role: Role = role.parse().map_err(|e| format!("line {n}: {e}"))?;
            let user = parse_secret(secret, role).map_err(|e| format!("line {n}: {e}"))?;
            if users.insert(name.to_string(), user).is_some() {
                return Err(format!("line {n}: user `{name}` appears twice"));
            }
        }
        let counts: std::collections::BTreeSet<usize> =
            users.values().map(|u| u.iterations).collect();
        if counts.len() > 1 {
            return Err(format!(
                "users have different iteration counts ({counts:?}); SCRAM here uses one count for all: add them again"
            ));
        }
        Ok(Users { users })
    }

    /// Writes the file atomically (a temporary file in the same directory, then a
    /// rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| Error::Users(format!("{}: {e}", dir.display())))?;
        let mut text = String::from(
            "# Ferret users: NAME:ROLE:scram-sha-256-sp$ITERATIONS$SALT$SALTED_PASSWORD\n# Written by `ferret users add`; keep it mode 0600.\n",
        );
        for (name, user) in &self.users {
            text.push_str(&user.to_line(name));
            text.push('\n');
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::Users(format!("{}: {e}", tmp.path().display())))?;
        }
        tmp.write_all(text.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| Error::Users(format!("{}: {e}", tmp.path().display())))?;
        tmp.persist(path)
            .map_err(|e| Error::Users(format!("{}: {}", path.display(), e.error)))?;
        Ok(())
    }

    /// Adds or (with `replace`) replaces a user.
    pub fn add(&mut self, name: &str, user: User, replace: bool) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::Users(format!(
                "user name `{}` is not 1–63 of A-Z a-z 0-9 _ . -",
                name.escape_debug()
            )));
        }
        if let Some(other) = self.users.values().next()
            && other.iterations != user.iterations
        {
            return Err(Error::Users(format!(
                "the file's users use {} iterations, the new one {}",
                other.iterations, user.iterations
            )));
        }
        if self.users.contains_key(name) && !replace {
            return Err(Error::Users(format!(
                "user `{name}` exists; pass --force to replace the password"
            )));
        }
        self.users.insert(name.to_string(), user);
        Ok(())
    }

    /// Removes a user; false when there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    /// A user by name.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Names and roles.
    pub fn list(&self) -> impl Iterator<Item = (&str, Role)> {
        self.users.iter().map(|(n, u)| (n.as_str(), u.role))
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The iteration count every user shares ([`ITERATIONS`] for an empty file).
    pub fn iterations(&self) -> usize {
        self.users
            .values()
            .next()
            .map_or(ITERATIONS, |u| u.iterations)
    }

    /// Checks a name and password; `None` for an unknown user or a wrong password
    /// (the same work either way).
    pub fn check(&self, name: &str, password: &str) -> Option<Role> {
        match self.users.get(name) {
            Some(u) => u.verify(password).then_some(u.role),
            None => {
                // Spend the same PBKDF2 time as a real check.
                let _ = gen_salted_password(password, b"ferret-no-such-user", self.iterations());
                None
            }
        }
    }
}

fn parse_secret(secret: &str, role: Role) -> std::result::Result<User, String> {
    let mut f = secret.split('$');
    let (Some(scheme), Some(iter), Some(salt), Some(salted), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(format!("expected {SCHEME}$ITERATIONS$SALT$SALTED_PASSWORD"));
    };
    if scheme != SCHEME {
        return Err(format!(
            "unknown scheme `{}` (expected {SCHEME})",
            scheme.escape_debug()
        ));
    }
    let iterations: usize = iter
        .parse()
        .ok()
        .filter(|n| (4096..=10_000_000).contains(n))
        .ok_or_else(|| {
            format!(
                "iterations `{}` is not 4096 to 10000000",
                iter.escape_debug()
            )
        })?;
    let salt = B64
        .decode(salt)
        .map_err(|e| format!("the salt is not base64: {e}"))?;
    if !(8..=64).contains(&salt.len()) {
        return Err(format!("the salt is {} bytes, not 8 to 64", salt.len()));
    }
    let salted = B64
        .decode(salted)
        .map_err(|e| format!("the salted password is not base64: {e}"))?;
    if salted.len() != 32 {
        return Err(format!(
            "the salted password is {} bytes; SCRAM-SHA-256's is 32",
            salted.len()
        ));
    }
    Ok(User {
        role,
        iterations,
        salt,
        salted,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_loads_back_and_checks_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users
            .add("ana", User::new(Role::Analyst, "p:ss word").unwrap(), false)
            .unwrap();
        users
            .add("bob", User::new(Role::Reader, "hunter2").unwrap(), false)
            .unwrap();
        assert!(
            users
                .add("bob", User::new(Role::Reader, "x").unwrap(), false)
                .is_err()
        );
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("p:ss word"));
        let back = Users::load(&path).unwrap();
        assert_eq!(back.check("ana", "p:ss word"), Some(Role::Analyst));
        assert_eq!(back.check("bob", "hunter2"), Some(Role::Reader));
        assert_eq!(back.check("bob", "hunter3"), None);
        assert_eq!(back.check("carol", "hunter2"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Users::load(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn damaged_lines_are_errors_naming_the_line() {
        let good = User::new(Role::Reader, "pw").unwrap().to_line("ok");
        for (text, want) in [
            ("a:reader", "line 1"),
            (&*format!("# c\n\n{good}\nbad name:reader:x"), "line 4"),
            (
                "x:root:scram-sha-256-sp$4096$AAAAAAAAAAA=$AAAA",
                "unknown role",
            ),
            ("x:reader:md5$abc", "expected scram"),
            (
                "x:reader:scram-sha-256-sp$10$AAAAAAAAAAA=$AAAA",
                "iterations",
            ),
            ("x:reader:scram-sha-256-sp$4096$!!$AAAA", "base64"),
            ("x:reader:scram-sha-256-sp$4096$AAAAAAAAAAA=$AAAA", "32"),
            (&*format!("{good}\n{good}"), "twice"),
        ] {
            let err = Users::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(User::new(Role::Reader, "").is_err());
        assert!(User::new(Role::Reader, "a\nb").is_err());
    }
}
