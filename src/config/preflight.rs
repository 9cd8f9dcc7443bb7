//! What `run` will need of this machine, checked without changing anything on it: the store's
//! directory (there or creatable, and writable) and every librdkafka client's properties
//! (accepted by librdkafka itself). `check-config`, `run` and `reload` check these too.

use std::io;
use std::path::{Path, PathBuf};

use rdkafka::producer::{BaseProducer, NoCustomPartitioner, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use super::{Config, ConfigError, SinkConfig};

impl Config {
    /// Everything about the machine that would stop `run` at once.
    pub fn preflight(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Err(message) = store_dir(&self.store.path) {
            errors.push(ConfigError {
                path: "store.path".into(),
                message: message.to_string(),
            });
        }
        for (name, sink) in &self.sinks {
            if let SinkConfig::Kafka {
                brokers,
                compression,
                properties,
                ..
            } = sink
            {
                let config = super::kafka::producer_config(brokers, compression, properties);
                if let Err(message) = librdkafka_accepts(config) {
                    errors.push(ConfigError {
                        path: format!("sinks.{name}.properties"),
                        message: message.to_string(),
                    });
                }
            }
        }
        if self.cluster.enabled() {
            if let Err(message) = librdkafka_accepts(super::kafka::kafka_config(&self.cluster)) {
                errors.push(ConfigError {
                    path: "cluster.properties".into(),
                    message: message.to_string(),
                });
            }
        }
        errors
    }
}

/// What would stop `run` on this machine; the caller adds the key path.
#[derive(Debug, thiserror::Error)]
enum PreflightError {
    /// The store's directory exists, and this process may not create files in it.
    #[error("cannot write in {path:?} ({error})")]
    CannotWriteIn { path: PathBuf, error: io::Error },
    /// The store's directory (or its listing) cannot be read.
    #[error("cannot read {path:?} ({error})")]
    CannotRead { path: PathBuf, error: io::Error },
    /// A file in the store's directory may not be written (another user's, say).
    #[error("cannot write {file:?} ({error})")]
    CannotWrite { file: PathBuf, error: io::Error },
    /// `store.path` names a file.
    #[error("{0:?} is a file, not a directory")]
    IsAFile(PathBuf),
    /// The store's directory does not exist, and its nearest existing ancestor may not be
    /// written in.
    #[error("{path:?} cannot be created: cannot write in {ancestor:?} ({error})")]
    AncestorNotWritable {
        path: PathBuf,
        ancestor: PathBuf,
        error: io::Error,
    },
    /// The store's directory does not exist, and its nearest existing ancestor is a file.
    #[error("{path:?} cannot be created: {ancestor:?} is a file")]
    AncestorIsAFile { path: PathBuf, ancestor: PathBuf },
    /// The store's directory does not exist, and an ancestor cannot be looked at.
    #[error("{path:?} cannot be created: {ancestor:?}: {error}")]
    AncestorUnreadable {
        path: PathBuf,
        ancestor: PathBuf,
        error: io::Error,
    },
    /// No part of the store's path exists.
    #[error("{0:?} cannot be created: no part of it exists")]
    NothingExists(PathBuf),
    /// librdkafka refused a client's properties (see [`crate::sink::kafka::refusal`]: the
    /// value is never shown).
    #[error("{0}")]
    Refused(String),
}

/// The store's directory: if it exists, a directory whose top-level files can be written;
/// if not, creatable (its nearest existing ancestor a directory that can be written in).
fn store_dir(path: &Path) -> Result<(), PreflightError> {
    if path.as_os_str().is_empty() {
        // Validation says so.
        return Ok(());
    }
    let at = || path.to_path_buf();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            writable(path).map_err(|error| PreflightError::CannotWriteIn { path: at(), error })?;
            let entries = std::fs::read_dir(path)
                .map_err(|error| PreflightError::CannotRead { path: at(), error })?;
            // The store's files: one written by another user stops `run`.
            for entry in entries.flatten() {
                let file = entry.path();
                writable(&file).map_err(|error| PreflightError::CannotWrite { file, error })?;
            }
            Ok(())
        }
        Ok(_) => Err(PreflightError::IsAFile(at())),
        Err(e) if missing(&e) => {
            for ancestor in path.ancestors().skip(1) {
                let ancestor = if ancestor.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    ancestor
                };
                match std::fs::metadata(ancestor) {
                    Ok(meta) if meta.is_dir() => {
                        return writable(ancestor).map_err(|error| {
                            PreflightError::AncestorNotWritable {
                                path: at(),
                                ancestor: ancestor.to_path_buf(),
                                error,
                            }
                        });
                    }
                    Ok(_) => {
                        return Err(PreflightError::AncestorIsAFile {
                            path: at(),
                            ancestor: ancestor.to_path_buf(),
                        })
                    }
                    Err(e) if missing(&e) => {}
                    Err(error) => {
                        return Err(PreflightError::AncestorUnreadable {
                            path: at(),
                            ancestor: ancestor.to_path_buf(),
                            error,
                        })
                    }
                }
            }
            Err(PreflightError::NothingExists(at()))
        }
        Err(error) => Err(PreflightError::CannotRead { path: at(), error }),
    }
}

fn missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// access(2) for writing (and, for a directory, entering): what the kernel would allow this
/// process, read-only mounts included, without creating anything.
fn writable(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    let mode = if path.is_dir() {
        libc::W_OK | libc::X_OK
    } else {
        libc::W_OK
    };
    // SAFETY: a NUL-terminated string that outlives the call; access() keeps no pointer.
    if unsafe { libc::access(c_path.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a client from `config` without its brokers: librdkafka then checks every property
/// (and how they combine) as `run` would, with nothing to connect to.
fn librdkafka_accepts(mut config: ClientConfig) -> Result<(), PreflightError> {
    config
        .remove("bootstrap.servers")
        .remove("metadata.broker.list");
    config
        .create_with_context::<_, BaseProducer<Quiet>>(Quiet)
        .map(drop)
        .map_err(|e| PreflightError::Refused(super::kafka::refusal(&e)))
}

/// A client context that logs nothing: librdkafka's warning that no broker is configured is
/// expected here.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ProducerContext<NoCustomPartitioner> for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}
