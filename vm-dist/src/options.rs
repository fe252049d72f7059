//! How to reach and log in to the NATS servers: plain data, so that the runtime and the CLI
//! can carry it in every build (the client itself, `nats`, is left out of loom builds).

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that holds the NATS password (never a command-line flag, which
/// other users of the machine could read).
pub const PASSWORD_ENV: &str = "VM_NATS_PASSWORD";

/// How to reach and log in to the NATS servers.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// Server URLs, e.g. `nats://127.0.0.1:4222`; the client fails over between them.
    pub urls: Vec<String>,
    /// User name; the password comes from [`PASSWORD_ENV`] (see [`NatsOptions::password`]).
    /// Without one, a URL's `user:password@` is used (visible to other users of the machine
    /// when given on a command line).
    pub user: Option<String>,
    /// The password (set by [`NatsOptions::with_password_from_env`] or by a test).
    pub password: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the servers' TLS certificates.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Refuse servers that do not offer TLS.
    pub require_tls: bool,
    /// The connection's name as the server shows it (`vm.<cluster>.<node>.<incarnation>`).
    pub client_name: Option<String>,
    /// How often the client pings the server (a dead server is noticed after two missed pongs).
    pub ping_interval: Option<Duration>,
    /// A login to the server's system account, for its disconnect notices (optional).
    pub system: Option<Box<NatsOptions>>,
}

impl NatsOptions {
    /// Options for `urls` with the password, if any, from [`PASSWORD_ENV`].
    pub fn with_password_from_env(mut self) -> NatsOptions {
        self.password = std::env::var(PASSWORD_ENV).ok();
        self
    }
}
