//! Certificate material from files, checked at start and reloaded on change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// How often a reloading configuration looks at its files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The files a process's TLS comes from (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificates this process trusts for its peers.
    pub ca: PathBuf,
    /// The certificate chain this process presents (leaf first).
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

/// Why certificate material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {}", path.display())]
    Read {
        /// Which file (`ca`, `cert`, `key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM object of the expected kind, or a broken one.
    #[error("the TLS {what} file {} holds no usable {expected}", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// The parser's complaint, if any.
        #[source]
        source: Option<rustls_pki_types::pem::Error>,
    },
    /// The CA bundle cannot verify anything.
    #[error("the TLS ca file {} holds no usable CA certificate", path.display())]
    Roots {
        /// Its path.
        path: PathBuf,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("TLS material is unusable")]
    Rustls(#[from] rustls::Error),
    /// A client-certificate verifier could not be built from the CA bundle.
    #[error("cannot verify client certificates with the CA bundle")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// This process's certificate does not carry the name its role needs.
    #[error("the TLS certificate {} does not carry {name:?} among its DNS names, which this service must prove", cert.display())]
    MissingName {
        /// The certificate file.
        cert: PathBuf,
        /// The name.
        name: String,
    },
    /// A name to check a peer against is not a valid DNS name.
    #[error("{name:?} cannot be checked in a certificate (not a DNS name)")]
    Name {
        /// The name.
        name: String,
    },
}

/// Loaded, parsed material: what the CA trusts, and what this process presents.
#[derive(Debug)]
pub struct Material {
    /// Trust anchors for peers.
    pub roots: Arc<RootCertStore>,
    /// This process's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let bad = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "PEM certificate",
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(Some(e)))?;
    if certs.is_empty() {
        return Err(bad(None));
    }
    Ok(certs)
}

/// The CA certificates in the PEM file `path`, as trust anchors.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates("ca", path)?);
    if added == 0 {
        return Err(TlsError::Roots {
            path: path.to_owned(),
        });
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    /// Read and parse the three files.
    pub fn load(&self) -> Result<Material, TlsError> {
        let roots = roots(&self.ca)?;
        let chain = certificates("cert", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "key",
            path: self.key.clone(),
            expected: "PEM private key",
            source: Some(e),
        })?;
        Ok(Material { roots, chain, key })
    }

    /// What identifies the files' current contents (size and modification time
    /// of each): a change means a rotation to load.
    fn stamps(&self) -> [Option<(SystemTime, u64)>; 3] {
        [&self.ca, &self.cert, &self.key].map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
    }
}

type Build<T> = Box<dyn Fn(&Material) -> Result<T, TlsError> + Send + Sync>;

/// A configuration built from [`TlsFiles`] and rebuilt when they change, so
/// that certificates and CAs rotate without a restart. A change that does not
/// load (a file half written, a key that does not match) keeps the working
/// configuration, logs why, and is tried again at the next check.
pub struct Reloading<T> {
    /// `None` for a fixed configuration ([`Reloading::fixed`]).
    source: Option<(TlsFiles, Build<T>)>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamps: [Option<(SystemTime, u64)>; 3],
    checked: Instant,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.source.as_ref().map(|(files, _)| files))
            .finish_non_exhaustive()
    }
}

impl<T> Reloading<T> {
    /// Build from `files` now (an error here stops the process at start).
    pub fn new(
        files: TlsFiles,
        build: impl Fn(&Material) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = files.stamps();
        let current = Arc::new(build(&files.load()?)?);
        Ok(Self {
            source: Some((files, Box::new(build))),
            state: Mutex::new(State {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// A configuration that never changes (e.g. a client that only trusts a CA).
    pub fn fixed(value: T) -> Self {
        Self {
            source: None,
            state: Mutex::new(State {
                current: Arc::new(value),
                stamps: [None; 3],
                checked: Instant::now(),
            }),
        }
    }

    /// The configuration for a new connection: the files are looked at (at most
    /// every [`RELOAD_CHECK`]) and reloaded if they changed.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((files, build)) = &self.source else {
            return state.current.clone();
        };
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = files.stamps();
            if stamps != state.stamps {
                match files.load().and_then(|m| build(&m)) {
                    Ok(fresh) => {
                        state.current = Arc::new(fresh);
                        state.stamps = stamps;
                        tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded");
                        metrics::counter!("globallock_tls_reloads_total", "outcome" => "ok")
                            .increment(1);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "TLS files changed but do not load; keeping the previous certificates");
                        metrics::counter!("globallock_tls_reloads_total", "outcome" => "failed")
                            .increment(1);
                    }
                }
            }
        }
        state.current.clone()
    }
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
