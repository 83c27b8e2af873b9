//! Secrets kept in the data directory, created at first use with mode 0600:
//! the node key (`node.key`, the identity this node signs with and answers
//! NIP-42 challenges with) and the generated control-API token
//! (`admin.token`, used when the config names none). Each file holds one
//! line of hex, so an operator can read, back up or replace it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::event::Keys;

/// File name of the node key inside the data directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// File name of the generated admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Why a secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("{0} does not hold a valid secret key (64 hex characters expected)")]
    BadKey(PathBuf),
    #[error("{0} is empty")]
    Empty(PathBuf),
    #[error("{0} is readable by group or others (mode {1:o}); run: chmod 600 {0}")]
    Exposed(PathBuf, u32),
}

/// Reads a secret file, refusing one that others on the machine can read:
/// a leaked node key lets anyone act as this mesh node.
fn read_private(path: &Path) -> std::io::Result<Result<String, SecretError>> {
    let text = std::fs::read_to_string(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Ok(Err(SecretError::Exposed(path.to_path_buf(), mode)));
        }
    }
    Ok(Ok(text))
}

/// The node key of the data dir `dir`, created on first call.
pub fn node_key(dir: &Path) -> Result<Keys, SecretError> {
    let path = dir.join(NODE_KEY_FILE);
    let text = read_or_create(&path, || hex::encode(Keys::generate().secret_bytes()))?;
    crate::event::decode_hex::<32>(&text)
        .and_then(|secret| Keys::from_secret(&secret))
        .ok_or(SecretError::BadKey(path))
}

/// The control-API token: `configured` when set, else the one generated
/// into the data dir.
pub fn admin_token(configured: &str, dir: &Path) -> Result<String, SecretError> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    read_or_create(&dir.join(ADMIN_TOKEN_FILE), || {
        hex::encode(rand::random::<[u8; 32]>())
    })
}

/// The control-API token a client on this machine should send: `configured`
/// when set, else the one `serve` generated (never creates it).
pub fn existing_admin_token(configured: &str, dir: &Path) -> Result<String, SecretError> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = dir.join(ADMIN_TOKEN_FILE);
    let text = read_private(&path).map_err(|e| SecretError::Read(path.clone(), e))??;
    first_line(&path, &text)
}

/// The first line of `path`; if the file does not exist, writes `make()`
/// to it first (mode 0600, never replacing a file created concurrently).
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<String, SecretError> {
    match read_private(path) {
        Ok(text) => return first_line(path, &text?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SecretError::Read(path.to_path_buf(), e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SecretError::Create(path.into(), e))?;
    }
    let value = make();
    // Written under a temporary name and linked into place, so a reader in
    // another process never sees a half-written file and a crash leaves none.
    // (Unique per call: two threads of one process may race here too.)
    let temp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(format!("{value}\n").as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(SecretError::Create(path.to_path_buf(), e));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(value),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text =
                read_private(path).map_err(|e| SecretError::Read(path.to_path_buf(), e))??;
            first_line(path, &text)
        }
        Err(e) => Err(SecretError::Create(path.to_path_buf(), e)),
    }
}

fn first_line(path: &Path, text: &str) -> Result<String, SecretError> {
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(SecretError::Empty(path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_is_created_once_with_private_rights() {
        let dir = tempfile::tempdir().unwrap();
        let first = node_key(dir.path()).unwrap();
        let again = node_key(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(NODE_KEY_FILE), "not hex\n").unwrap();
        assert!(matches!(node_key(dir.path()), Err(SecretError::BadKey(_))));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        node_key(dir.path()).unwrap();
        let path = dir.path().join(NODE_KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(err) = node_key(dir.path()) else {
            panic!("a group-readable key was accepted");
        };
        assert!(matches!(err, SecretError::Exposed(_, 0o644)), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn admin_token_prefers_config_then_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(admin_token("set", dir.path()).unwrap(), "set");
        let generated = admin_token("", dir.path()).unwrap();
        assert_eq!(generated.len(), 64);
        assert_eq!(admin_token("", dir.path()).unwrap(), generated);
    }
}
