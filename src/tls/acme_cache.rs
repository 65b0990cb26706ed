//! Where ACME keeps what it obtained: `<data_dir>/acme/`, mode 0700, holding the account key
//! and the certificate with its private key, each file mode 0600 and written atomically (a
//! temporary file renamed over the old one), so a crash mid-write never leaves half a key.
//! rustls-acme's own `DirCache` uses the process umask and writes in place, hence this one.
//! Each file is named after a hash of what it belongs to (the domains or the contact, and the
//! directory URL), so changing either starts afresh instead of reusing a mismatched file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustls_acme::{AccountCache, CertCache};
use sha2::{Digest, Sha256};

/// The cache directory; remembers the expiry of the last certificate it loaded or stored.
#[derive(Debug, Clone)]
pub struct AcmeCache {
    dir: PathBuf,
    /// Unix time the last certificate seen here expires, for the log.
    last_expiry: Arc<Mutex<Option<i64>>>,
}

fn file_name(prefix: &str, parts: &[String], directory_url: &str) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(directory_url.as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// The `notAfter` (Unix time) of the first certificate in a PEM bundle, if it parses.
pub fn expiry(pem: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&text.as_bytes()[begin..]).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl AcmeCache {
    /// Creates the directory (0700, tightened if it exists wider).
    pub fn open(dir: PathBuf) -> io::Result<AcmeCache> {
        fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(AcmeCache {
            dir,
            last_expiry: Arc::new(Mutex::new(None)),
        })
    }

    /// Unix time the last certificate loaded or stored expires.
    pub fn last_expiry(&self) -> Option<i64> {
        self.last_expiry.lock().ok().and_then(|e| *e)
    }

    fn note_expiry(&self, pem: &[u8]) {
        if let Ok(mut last) = self.last_expiry.lock() {
            *last = expiry(pem);
        }
    }

    async fn read(&self, name: String) -> io::Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write(&self, name: String, contents: &[u8]) -> io::Result<()> {
        let dir = self.dir.clone();
        let contents = contents.to_vec();
        blocking(move || write_private(&dir, &name, &contents)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("cache task failed: {e}")))?
}

/// Writes `dir/name` with mode 0600 through a temporary file renamed over it.
fn write_private(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        // A temporary file left over with other modes keeps them on open: set them again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        // The rename itself survives a crash once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[async_trait]
impl CertCache for AcmeCache {
    type EC = io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let pem = self
            .read(file_name("cert", domains, directory_url) + ".pem")
            .await?;
        if let Some(pem) = &pem {
            self.note_expiry(pem);
        }
        Ok(pem)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> io::Result<()> {
        self.note_expiry(cert);
        self.write(file_name("cert", domains, directory_url) + ".pem", cert)
            .await
    }
}

#[async_trait]
impl AccountCache for AcmeCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        self.read(file_name("account", contact, directory_url) + ".key")
            .await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> io::Result<()> {
        self.write(
            file_name("account", contact, directory_url) + ".key",
            account,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_private_replaced_whole_and_keyed_by_what_they_belong_to() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("acme");
        let cache = AcmeCache::open(dir.clone()).expect("open");
        let domains = vec!["a.example".to_string()];
        let url = "https://ca.example/dir";
        assert!(cache
            .load_cert(&domains, url)
            .await
            .expect("load")
            .is_none());
        cache
            .store_cert(&domains, url, b"one")
            .await
            .expect("store");
        cache
            .store_cert(&domains, url, b"two")
            .await
            .expect("store again");
        assert_eq!(
            cache
                .load_cert(&domains, url)
                .await
                .expect("load")
                .as_deref(),
            Some(&b"two"[..])
        );
        let other = vec!["b.example".to_string()];
        assert!(cache.load_cert(&other, url).await.expect("load").is_none());
        assert!(cache
            .load_cert(&domains, "https://other.example/dir")
            .await
            .expect("load")
            .is_none());
        cache
            .store_account(&[], url, b"key")
            .await
            .expect("account");
        assert_eq!(
            cache.load_account(&[], url).await.expect("load").as_deref(),
            Some(&b"key"[..])
        );

        let names: Vec<String> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            for name in names {
                assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
            }
        }
    }

    #[test]
    fn expiry_is_read_from_the_first_certificate() {
        let c = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("rcgen");
        let pem = format!("{}{}", c.signing_key.serialize_pem(), c.cert.pem());
        // rcgen's default validity ends in 4096.
        assert!(expiry(pem.as_bytes()).is_some_and(|t| t > 4_000_000_000));
        assert_eq!(expiry(b"not a pem"), None);
    }
}
