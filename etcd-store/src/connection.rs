//! The etcd client of one shard, over TLS when configured, rebuilt when the
//! certificate files change (rotation without a restart).
//!
//! With TLS the agent presents a client certificate (etcd's `--client-cert-auth`
//! with `--trusted-ca-file` accepts only certificates of its CA) and checks that
//! the server proves `server_name` (or, absent, the host it dialled), so it
//! knows it reached its own region's etcd.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use globallock_tls::{Reloading, TlsError, TlsFiles};

/// TLS towards one shard's etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that issued etcd's certificates.
    pub ca: std::path::PathBuf,
    /// The client certificate presented to etcd.
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
    /// The name etcd's certificate must carry (absent: the host of each
    /// endpoint URL).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl EtcdTls {
    fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Load and check the files now (configuration validation).
    pub fn check(&self) -> Result<(), TlsError> {
        self.files().load().map(|_| ())
    }
}

/// How to (re)connect, and the client in use.
pub(crate) struct Connection {
    endpoints: Vec<String>,
    options: ConnectOptions,
    tls: Option<Arc<Reloading<TlsOptions>>>,
    current: Mutex<(Arc<Client>, Option<Arc<TlsOptions>>)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a shard's etcd client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS files towards etcd do not load.
    #[error("etcd TLS material")]
    Tls(#[from] TlsError),
    /// The client refused the endpoints.
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
}

impl Connection {
    /// Connect lazily to `endpoints` (https URLs when `tls` is set).
    pub(crate) async fn open(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Option<&EtcdTls>,
    ) -> Result<Self, ConnectError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), timeout);
        let tls = match tls {
            None => None,
            Some(tls) => {
                let server_name = tls.server_name.clone();
                let files = tls.files();
                let pems = files.clone();
                Some(Arc::new(Reloading::new(files, move |_checked| {
                    // `Reloading` checked that the files parse and match; tonic
                    // takes the PEM text itself.
                    tls_options(&pems, server_name.as_deref())
                })?))
            }
        };
        let first = tls.as_ref().map(|t| t.current());
        let client = connect(&endpoints, &options, first.as_deref()).await?;
        Ok(Self {
            endpoints,
            options,
            tls,
            current: Mutex::new((Arc::new(client), first)),
        })
    }

    /// The client to use now.
    pub(crate) fn client(&self) -> Arc<Client> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Reconnect if the certificate files changed since the client was made
    /// (looked at no more than once a second). Connections of the old client
    /// finish the requests they carry.
    pub(crate) async fn refresh(&self) {
        let Some(tls) = &self.tls else { return };
        let latest = tls.current();
        let stale = {
            let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            !current.1.as_ref().is_some_and(|c| Arc::ptr_eq(c, &latest))
        };
        if !stale {
            return;
        }
        match connect(&self.endpoints, &self.options, Some(&latest)).await {
            Ok(client) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
                    (Arc::new(client), Some(latest));
                tracing::info!(endpoints = ?self.endpoints, "etcd client reconnected with rotated certificates");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reconnect to etcd with rotated certificates; keeping the previous connection");
            }
        }
    }
}

fn tls_options(files: &TlsFiles, server_name: Option<&str>) -> Result<TlsOptions, TlsError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let mut options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca", &files.ca)?))
        .identity(Identity::from_pem(
            read("cert", &files.cert)?,
            read("key", &files.key)?,
        ));
    if let Some(name) = server_name {
        options = options.domain_name(name);
    }
    Ok(options)
}

async fn connect(
    endpoints: &[String],
    options: &ConnectOptions,
    tls: Option<&TlsOptions>,
) -> Result<Client, etcd_client::Error> {
    let mut options = options.clone();
    if let Some(tls) = tls {
        options = options.with_tls(tls.clone());
    }
    Client::connect(endpoints, Some(options)).await
}
