//! Secrets generated on first start into the data directory (`jwt-secret`, `turn-secret`),
//! created with file mode 0600 and never rewritten once they exist.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

/// The secrets the server signs with.
#[derive(Clone)]
pub struct Secrets {
    /// HS256 key for bearer tokens.
    pub jwt: Vec<u8>,
    /// TURN REST API secrets; the first signs, all verify.
    pub turn: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// Creates the data directory (mode 0700 when new).
pub fn ensure_data_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Reads `dir/name`, generating 32 random bytes (base64url text) into it first if missing.
pub fn load_or_generate(dir: &Path, name: &str) -> io::Result<String> {
    let path: PathBuf = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is empty; delete it to generate a new secret",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(secret)
        }
        // Another process (e.g. `signalbox token` racing the server) created it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok(fs::read_to_string(&path)?.trim().to_string())
        }
        Err(e) => Err(e),
    }
}

/// Resolves the secrets: configured values win, otherwise generated files in `data_dir`.
pub fn resolve(
    data_dir: &Path,
    jwt_configured: Option<&str>,
    turn_configured: &[String],
) -> io::Result<Secrets> {
    ensure_data_dir(data_dir)?;
    let jwt = match jwt_configured {
        Some(s) => s.as_bytes().to_vec(),
        None => load_or_generate(data_dir, "jwt-secret")?.into_bytes(),
    };
    let turn = if turn_configured.is_empty() {
        vec![load_or_generate(data_dir, "turn-secret")?.into_bytes()]
    } else {
        turn_configured
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    };
    Ok(Secrets { jwt, turn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_generate(dir.path(), "jwt-secret").expect("generate");
        let b = load_or_generate(dir.path(), "jwt-secret").expect("reload");
        assert_eq!(a, b);
        assert!(a.len() >= 43);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("jwt-secret"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_secrets_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = resolve(
            dir.path(),
            Some("x".repeat(32).as_str()),
            &["turnsecret-0123456789".into()],
        )
        .expect("resolve");
        assert_eq!(s.jwt, "x".repeat(32).into_bytes());
        assert_eq!(s.turn, vec![b"turnsecret-0123456789".to_vec()]);
        assert!(!dir.path().join("jwt-secret").exists());
    }
}
