//! Logging on stderr (text or JSON) with a filter that a config reload can replace: `log_level`
//! from the configuration, unless `RUST_LOG` is set, which then wins at start and on reload.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{Config, LogFormat};

/// Replaces the filter of the installed subscriber.
type Handle = reload::Handle<EnvFilter, Registry>;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = HANDLE.set(handle);
    }
}

/// Applies a reloaded `log_level`. Returns false when nothing changed because `RUST_LOG` is
/// set (it wins) or no subscriber of ours is installed.
pub fn set_level(level: &str) -> Result<bool, String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(false);
    }
    let Some(handle) = HANDLE.get() else {
        return Ok(false);
    };
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level: {e}"))?;
    handle
        .reload(filter)
        .map(|()| true)
        .map_err(|e| format!("log_level: {e}"))
}
