//! Certificate files that change on disk (a renewal by certbot or another ACME client, a copy
//! by hand): polled every [`POLL`], and read again on SIGHUP. A new pair that loads replaces the
//! served certificate for new handshakes; open connections keep going. A pair that does not
//! load (half-written, mismatched) is logged and the old certificate keeps serving.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::certs::{self, CertError, CertStore};
use crate::config::TlsFiles;

/// How often the files' metadata is compared.
pub const POLL: Duration = Duration::from_secs(2);

/// What tells a changed file from an unchanged one without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The files behind the served certificate.
#[derive(Debug)]
pub struct CertFiles {
    store: Arc<CertStore>,
    state: Mutex<(TlsFiles, Option<Stamp>, Option<Stamp>)>,
}

impl CertFiles {
    /// Loads `files` into `store` (an error if they do not load: the server does not start).
    pub fn open(store: Arc<CertStore>, files: TlsFiles) -> Result<Arc<CertFiles>, CertError> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        store.set(Arc::new(certs::load(&files)?));
        Ok(Arc::new(CertFiles {
            store,
            state: Mutex::new((files, stamps.0, stamps.1)),
        }))
    }

    /// Reads the pair again (SIGHUP, possibly with new paths) and serves it. On an error the
    /// old certificate keeps serving.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), CertError> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let key = certs::load(files)?;
        self.store.set(Arc::new(key));
        if let Ok(mut state) = self.state.lock() {
            *state = (files.clone(), stamps.0, stamps.1);
        }
        Ok(())
    }

    /// Reloads when either file changed since the last load; `Some` with the outcome then.
    pub fn reload_if_changed(&self) -> Option<Result<(), CertError>> {
        let (files, changed) = {
            let state = self.state.lock().ok()?;
            let (files, cert, key) = &*state;
            let now = (stamp(&files.cert), stamp(&files.key));
            (files.clone(), now.0 != *cert || now.1 != *key)
        };
        if !changed {
            return None;
        }
        let outcome = self.reload(&files);
        if outcome.is_err() {
            // Remember what failed so the same broken files are not retried (and logged) every
            // poll; the next change to them is.
            if let Ok(mut state) = self.state.lock() {
                state.1 = stamp(&files.cert);
                state.2 = stamp(&files.key);
            }
        }
        Some(outcome)
    }

    /// Polls the files until `stop` changes.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match self.reload_if_changed() {
                Some(Ok(())) => tracing::info!("TLS certificate files changed: new certificate served"),
                Some(Err(e)) => tracing::error!(
                    "TLS certificate files changed but do not load, the old certificate keeps serving: {e}"
                ),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(files: &TlsFiles, name: &str) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        std::fs::write(&files.cert, c.cert.pem()).expect("cert");
        std::fs::write(&files.key, c.signing_key.serialize_pem()).expect("key");
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
        };
        write(&files, "one.test");
        let store = CertStore::new();
        let watched = CertFiles::open(Arc::clone(&store), files.clone()).expect("open");
        let first = store.current().expect("first").cert.clone();
        assert!(watched.reload_if_changed().is_none(), "nothing changed");

        write(&files, "two.test");
        assert!(matches!(watched.reload_if_changed(), Some(Ok(()))));
        let second = store.current().expect("second").cert.clone();
        assert_ne!(first, second);

        std::fs::write(&files.key, "half-written").expect("break");
        assert!(matches!(watched.reload_if_changed(), Some(Err(_))));
        assert_eq!(store.current().expect("kept").cert, second);
        assert!(
            watched.reload_if_changed().is_none(),
            "a broken pair is not retried"
        );
    }
}
