//! vm-cli: the `vm` command line. **The only crate that prints** its own messages (diagnostics,
//! reports, disassembly); a program's own output goes through vm-io, and so does every file this
//! crate reads or writes. It builds no runtime and spawns no task: `vm run` hands the module to
//! [`vm_sched::block_on_run`].
//!
//! All logic lives in this library so that the integration tests can build their own wrapper
//! binary over [`main_entry`] (or call [`run_cli`] / [`run_command`] in-process); `main.rs` is one line.
//!
//! Commands and exit statuses are the stable CLI contract of DESIGN.md:
//!
//! | command | does |
//! |---|---|
//! | `vm run [--workers N] [--fuel N] [--max-frames N] [--max-memory SIZE] [--allow-net[=..]] [--allow-read[=..]] [--allow-write[=..]] [--allow-env[=..]] FILE [ARGS...]` | runs `main` with ARGS (FILE is a module if it starts with the `.vbc` magic bytes, else source) |
//! | `vm asm FILE.vasm [-o FILE.vbc]` | assembles and verifies, writes the module |
//! | `vm disasm FILE.vbc` | prints the module as assembly |
//! | `vm check [--lib] FILE` | assembles (or decodes) and verifies, checks `main` as `vm run` would (not with `--lib`), reports every error, prints nothing if ok |
//! | `vm repl [--workers N] [--fuel N] [--max-frames N] [--allow-...] [FILE...]` | an interactive session (see [`repl`]) |
//! | `vm run --snapshot PATH [--snapshot-every DUR] [--snapshot-on-term] FILE [ARGS...]` | runs with snapshots (docs/snapshots.md) |
//! | `vm resume [--timers=frozen\|wall] [--allow-...] PATH` | continues from the newest snapshot of PATH that loads |
//! | `vm up [--workers N] [--max-memory SIZE] [--snapshot PATH [--snapshot-every DUR] [--snapshot-on-term]] MANIFEST.json` | runs the containers of a manifest in one VM (docs/containers.md) |
//! | `vm resume --manifest MANIFEST.json [--timers=..] PATH` | continues a VM of containers, each with the grants of its manifest entry (docs/snapshots.md) |
//! | `vm run --node NAME --cluster nats://HOST:PORT[,...] FILE [ARGS...]` | runs `main` as a node of a cluster (docs/cluster.md); `vm repl` takes the same flags |
//! | `vm node --node NAME --cluster URL FILE` | a node with no `main` serving spawns of FILE's functions until SIGTERM, then leaving gracefully |
//! | `vm nodes --cluster URL` | the live nodes: name, incarnation, actors, uptime |
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success (`main` returned) |
//! | 1 | uncaught exception in the main actor, or it ended with an exit reason other than `:normal` |
//! | 2 | usage, assembly, load or verification error |
//! | 3 | deadlock |
//! | 101 | internal error (the VM panicked; Rust's own status for a panic) |

pub mod alloc;
mod render;
pub mod repl;

pub use render::Style;

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use vm_core::{Module, Value};
use vm_sched::{Outcome, RunError, RunOptions};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: uncaught exception in the main actor.
pub const EXIT_EXCEPTION: u8 = 1;
/// Exit status: usage, assembly, load or verification error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: deadlock.
pub const EXIT_DEADLOCK: u8 = 3;
/// Exit status: the VM itself failed (a bug).
pub const EXIT_INTERNAL: u8 = 101;

/// The `vm` command line.
#[derive(Debug, Parser)]
#[command(name = "vm", version, about = "An actor VM: run, assemble, disassemble and check programs")]
#[command(after_help = "Exit status: 0 ok, 1 uncaught exception, 2 usage or assembly error, 3 deadlock.")]
pub struct Cli {
    /// Log what the VM does to stderr at trace level (otherwise RUST_LOG decides; default warn).
    #[arg(long, global = true)]
    pub trace: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// A `vm` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a program: `main` gets ARGS as a list of strings; the VM exits when it returns.
    Run(RunArgs),
    /// Assemble (and verify) a program into a binary module.
    Asm {
        /// The program's top-level file.
        file: PathBuf,
        /// Where to write the module (default: FILE with the extension `.vbc`).
        #[arg(short, long, value_name = "FILE.vbc")]
        output: Option<PathBuf>,
    },
    /// Print a binary module as assembly that re-assembles to the same bytes.
    Disasm {
        /// The module.
        file: PathBuf,
    },
    /// Assemble and verify a program, report every error, print nothing if there is none.
    /// Like `vm run`, it also refuses a program without a `main` taking 0 or 1 arguments.
    Check {
        /// The program's top-level file (assembly source, or a `.vbc` module).
        file: PathBuf,
        /// Check a library: a file of functions for other programs, which needs no `main`.
        #[arg(long)]
        lib: bool,
    },
    /// An interactive session: load programs, spawn actors, inspect and talk to them.
    Repl(repl::ReplArgs),
    /// Continue a VM from the newest snapshot of PATH that loads (see `vm run --snapshot`).
    Resume(ResumeArgs),
    /// Join a cluster as a node that serves remote spawns of FILE's functions (it runs no
    /// `main`) until SIGTERM, then leaves gracefully.
    Node(NodeArgs),
    /// List the live nodes of a cluster: name, incarnation, actors, uptime.
    Nodes(NodesArgs),
    /// Run the containers a manifest describes in one VM (see docs/containers.md).
    Up(UpArgs),
}

/// How to reach a cluster's NATS servers, shared by `vm run`, `vm node`, `vm nodes` and
/// `vm repl` (docs/cluster.md).
#[derive(Debug, Clone, Default, Args)]
pub struct NatsFlags {
    /// The cluster's NATS servers (the client fails over between them).
    #[arg(long, value_name = "nats://HOST:PORT,...")]
    pub cluster: Option<String>,
    /// The cluster's name: nodes of one cluster share it (NATS subjects `vm.NAME.>`).
    #[arg(long, value_name = "NAME", default_value = "vm")]
    pub cluster_name: String,
    /// NATS user; the password is read from the environment variable VM_NATS_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub nats_user: Option<String>,
    /// A NATS `.creds` file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS nkey seed.
    #[arg(long, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the servers' TLS certificates.
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Refuse servers that do not offer TLS.
    #[arg(long)]
    pub nats_require_tls: bool,
}

/// Membership of a cluster, for `vm run`, `vm node` and `vm repl`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterFlags {
    /// Join the cluster given by --cluster as node NAME (letters, digits, '_' and '-').
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node: Option<String>,
    /// How often the node announces itself and checks its peers (`500ms`, `1s`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "node")]
    pub heartbeat: Option<std::time::Duration>,
    /// Silence after which a peer is declared down.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "node")]
    pub down_after: Option<std::time::Duration>,
    /// Take direct connections from peers on ADDR (`127.0.0.1:0`, `HOST:PORT`; announced, so
    /// peers must be able to reach it): signals between two nodes that both take them go over
    /// one TCP connection instead of through NATS. Off unless given (or `VM_CLUSTER_DIRECT`).
    #[arg(long, value_name = "ADDR", requires = "node")]
    pub cluster_direct: Option<String>,
    /// The servers and the login.
    #[command(flatten)]
    pub nats: NatsFlags,
}

impl NatsFlags {
    /// The NATS options these flags describe (the password from the environment).
    pub fn nats_options(&self) -> Result<vm_dist::NatsOptions, String> {
        let Some(urls) = &self.cluster else {
            return Err("error: --cluster nats://HOST:PORT is needed\n".into());
        };
        let urls: Vec<String> =
            urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
        if urls.is_empty() {
            return Err("error: --cluster names no server (use nats://HOST:PORT[,...])\n".into());
        }
        let o = vm_dist::NatsOptions {
            urls,
            user: self.nats_user.clone(),
            creds_file: self.nats_creds.clone(),
            nkey_file: self.nats_nkey.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            require_tls: self.nats_require_tls,
            ..Default::default()
        };
        Ok(if self.nats_user.is_some() { o.with_password_from_env() } else { o })
    }

    /// The cluster these flags name, for a client that does not join it (`vm nodes`).
    pub fn observer(&self) -> Result<vm_sched::cluster::ClusterOptions, String> {
        let mut c = vm_sched::cluster::ClusterOptions::new(&self.cluster_name, "observer", vec![]);
        c.nats = self.nats_options()?;
        Ok(c)
    }
}

impl ClusterFlags {
    /// The cluster to join, if `--node` was given.
    pub fn cluster_options(&self) -> Result<Option<vm_sched::cluster::ClusterOptions>, String> {
        let Some(node) = &self.node else { return Ok(None) };
        vm_dist::id::check_node_name(node).map_err(|e| format!("error: --node: {e}\n"))?;
        vm_dist::id::check_node_name(&self.nats.cluster_name)
            .map_err(|e| format!("error: --cluster-name: {e}\n"))?;
        let mut c = vm_sched::cluster::ClusterOptions::new(&self.nats.cluster_name, node, vec![]);
        c.nats = self.nats.nats_options()?;
        if let Some(h) = self.heartbeat {
            c.heartbeat = h;
        }
        if let Some(d) = self.down_after {
            c.down_after = d;
        }
        let direct = self.cluster_direct.clone().or_else(|| std::env::var("VM_CLUSTER_DIRECT").ok());
        if let Some(addr) = direct.filter(|a| !a.is_empty()) {
            c.direct = Some(parse_socket_addr(&addr).map_err(|e| format!("error: --cluster-direct: {e}\n"))?);
        }
        Ok(Some(c))
    }
}

/// Arguments of `vm node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Runtime settings and permissions, as for `vm run`.
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// The cluster to join (--node and --cluster are required).
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// The program whose functions remote nodes may spawn here (it needs no `main`).
    #[arg(value_name = "FILE.vasm|FILE.vbc")]
    pub file: PathBuf,
}

/// Arguments of `vm nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// The cluster's servers and login.
    #[command(flatten)]
    pub nats: NatsFlags,
}

/// Arguments of `vm up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The manifest (JSON): each container's name, module, args, grants, limits, restart type.
    pub manifest: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<NonZeroUsize>,
    /// The whole VM's memory budget, shared by every container, as for `vm run` (a container's
    /// `max_heap` limit bounds each of its actors inside it): past it, the actor holding the
    /// most is ended with {:limit, :memory}. Default: three quarters of what the system allows
    /// the process.
    #[arg(long, value_name = "SIZE", value_parser = vm_io::sysmem::parse_size)]
    pub max_memory: Option<u64>,
    /// Snapshots of the running VM (`vm resume --manifest MANIFEST.json PATH` continues it).
    #[command(flatten)]
    pub snapshots: SnapshotFlags,
}

/// Arguments of `vm resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// How timers count the time the VM was stopped: `frozen` (they keep the time they had
    /// left) or `wall` (the downtime counts: overdue timers fire at once).
    #[arg(long, value_enum, default_value_t = TimersArg::Frozen)]
    pub timers: TimersArg,
    /// Worker threads (default: as when the snapshot was taken, else one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<NonZeroUsize>,
    /// The VM's memory budget, as for `vm run` (not stored in a snapshot either).
    #[arg(long, value_name = "SIZE", value_parser = vm_io::sysmem::parse_size)]
    pub max_memory: Option<u64>,
    /// What the resumed program may do: grants are never stored in a snapshot.
    #[command(flatten)]
    pub perms: PermFlags,
    /// Resume a VM of several containers (`vm up`): every container of the snapshot must have
    /// an entry in this manifest, whose grants it gets (and only those).
    #[arg(long, value_name = "MANIFEST.json")]
    pub manifest: Option<PathBuf>,
    /// The snapshot file (its generations PATH.1, PATH.2, ... are tried if it does not load).
    pub path: PathBuf,
}

/// `vm resume --timers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimersArg {
    /// Timers keep the time they had left.
    Frozen,
    /// The downtime counts.
    Wall,
}

/// Snapshot flags of `vm run`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotFlags {
    /// Write snapshots of the running VM to PATH (older generations kept as PATH.1, ...);
    /// `vm resume PATH` continues from the newest one.
    #[arg(long, value_name = "PATH")]
    pub snapshot: Option<PathBuf>,
    /// Take a snapshot every DUR (`50ms`, `30s`, `5m`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "snapshot")]
    pub snapshot_every: Option<std::time::Duration>,
    /// On SIGTERM, take a snapshot and exit with status 0.
    #[arg(long, requires = "snapshot")]
    pub snapshot_on_term: bool,
    /// How many generations of the snapshot file to keep.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "snapshot",
          value_parser = clap::value_parser!(u32).range(1..100))]
    pub snapshot_keep: u32,
}

/// Parses `HOST:PORT` (a name is resolved; the first address is taken).
pub fn parse_socket_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not an address (HOST:PORT, e.g. 127.0.0.1:0): {e}"))?;
    addrs.next().ok_or_else(|| format!("{text:?} names no address"))
}

/// Parses a duration such as `50ms`, `30s` or `5m` (a bare number is milliseconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration such as 50ms, 30s or 5m"))?;
    let ms = match unit {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    match ms {
        Some(0) => Err("the duration must be more than 0".into()),
        Some(ms) => Ok(std::time::Duration::from_millis(ms)),
        None => Err(format!("{text:?} is too long")),
    }
}

/// Arguments of `vm run`.
#[derive(Debug, Args)]
#[command(override_usage = "vm run [OPTIONS] <FILE.vasm|FILE.vbc> [ARGS]...")]
pub struct RunArgs {
    /// Runtime settings and permissions.
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Snapshots of the running VM.
    #[command(flatten)]
    pub snapshots: SnapshotFlags,
    /// Membership of a cluster (`--node NAME --cluster URL`).
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// The program (a `.vbc` module, or assembly source with any other extension), then the
    /// arguments for `main`, passed through untouched: everything after FILE belongs to the
    /// program, even words that look like `vm` options.
    // One clap argument holds both, because clap only stops recognising its own options once a
    // trailing argument has started, and that must happen at FILE.
    #[arg(value_name = "FILE.vasm|FILE.vbc", required = true, num_args = 1..,
          trailing_var_arg = true)]
    pub program: Vec<String>,
}

/// Runtime settings and permissions, shared by `vm run` and `vm repl`.
#[derive(Debug, Clone, Args)]
pub struct RuntimeFlags {
    /// Worker threads, 1 to 1024 (default: one per core).
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<NonZeroUsize>,
    /// Fuel per time slice before an actor yields (charged on backward jumps and calls).
    #[arg(long, value_name = "N", default_value_t = vm_sched::Config::default().fuel,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fuel: u32,
    /// Maximum call depth; deeper recursion raises :stack_overflow.
    #[arg(long, value_name = "N", default_value_t = vm_core::step::DEFAULT_MAX_FRAMES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_frames: u32,
    /// The VM's memory budget (`512m`, `2g`): past it, the actor holding the most is ended with
    /// {:limit, :memory}. Default: three quarters of what the system allows the process (its
    /// cgroup's limit, its address-space limit, the machine's memory).
    #[arg(long, value_name = "SIZE", value_parser = vm_io::sysmem::parse_size)]
    pub max_memory: Option<u64>,
    /// Seed the actors' random generators (rand, randf, randb), so a run can be repeated
    /// (default: a different seed each run).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// What programs may do (deny by default).
    #[command(flatten)]
    pub perms: PermFlags,
}

/// The most worker threads `--workers` accepts. More threads than cores only cost memory (each
/// has its stack), and far more (30,000) exhaust the process's memory maps, which made the
/// runtime's thread start panic.
pub const MAX_WORKERS: usize = 1024;

/// `--workers N`: 1 to [`MAX_WORKERS`].
fn parse_workers(text: &str) -> Result<NonZeroUsize, String> {
    let n: usize = text.trim().parse().map_err(|_| format!("{text:?} is not a number of threads"))?;
    match NonZeroUsize::new(n) {
        Some(n) if n.get() <= MAX_WORKERS => Ok(n),
        _ => Err(format!(
            "the VM runs on 1 to {MAX_WORKERS} worker threads, not {n} (the default is one per core)"
        )),
    }
}

impl RuntimeFlags {
    /// The runtime options these flags describe (and [`HOG_VAR`]); a malformed permission flag
    /// or threshold is an error.
    pub fn run_options(&self) -> Result<RunOptions, String> {
        Ok(RunOptions {
            fuel_per_slice: self.fuel,
            max_frames: self.max_frames,
            workers: self.workers,
            perms: self.perms.permissions()?,
            seed: self.seed,
            hog_threshold_ms: hog_threshold_ms(std::env::var_os(HOG_VAR).as_deref())?,
            max_memory: self.max_memory.or_else(vm_io::sysmem::default_budget),
            cluster: None,
        })
    }
}

/// The environment variable that sets how long an actor may hold a worker thread, in
/// milliseconds, before the heartbeat warns of it on stderr (default 100). Test harnesses that
/// compare stderr raise it, so that a loaded machine's slow slices do not count as output.
pub const HOG_VAR: &str = "VM_HOG_THRESHOLD_MS";

/// [`HOG_VAR`]'s value (unset: the default): a whole number of milliseconds, at least 1.
fn hog_threshold_ms(value: Option<&std::ffi::OsStr>) -> Result<u64, String> {
    let Some(value) = value else { return Ok(RunOptions::default().hog_threshold_ms) };
    match value.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(ms) if ms >= 1 => Ok(ms),
        _ => Err(format!(
            "error: {HOG_VAR}={} is not a number of milliseconds (at least 1)\n",
            value.to_string_lossy()
        )),
    }
}

/// Permission flags, shared by `vm run` and `vm repl` (see docs/io.md).
#[derive(Debug, Clone, Default, Args)]
pub struct PermFlags {
    /// Allow network access: to everything, or to HOST[:PORT],... only.
    #[arg(long, value_name = "HOST[:PORT],...", num_args = 0..=1, require_equals = true)]
    pub allow_net: Option<Option<String>>,
    /// Allow reading files and listing directories: everywhere, or under PATH,... only.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true)]
    pub allow_read: Option<Option<String>>,
    /// Allow creating, writing and removing files: everywhere, or under PATH,... only.
    #[arg(long, value_name = "PATH,...", num_args = 0..=1, require_equals = true)]
    pub allow_write: Option<Option<String>>,
    /// Allow reading environment variables: all of them, or NAME,... only.
    #[arg(long, value_name = "NAME,...", num_args = 0..=1, require_equals = true)]
    pub allow_env: Option<Option<String>>,
}

impl PermFlags {
    /// The permissions these flags grant; an unparsable value is a usage error.
    pub fn permissions(&self) -> Result<vm_io::Permissions, String> {
        let mut p = vm_io::Permissions::default();
        if let Some(v) = &self.allow_net {
            p.net = vm_io::Permissions::parse_net(v.as_deref()).map_err(|e| format!("error: {e}\n"))?;
        }
        if let Some(v) = &self.allow_read {
            p.read = vm_io::Permissions::parse_paths(v.as_deref(), "--allow-read")
                .map_err(|e| format!("error: {e}\n"))?;
        }
        if let Some(v) = &self.allow_write {
            p.write = vm_io::Permissions::parse_paths(v.as_deref(), "--allow-write")
                .map_err(|e| format!("error: {e}\n"))?;
        }
        if let Some(v) = &self.allow_env {
            p.env = vm_io::Permissions::parse_env(v.as_deref()).map_err(|e| format!("error: {e}\n"))?;
        }
        Ok(p)
    }
}

impl RunArgs {
    /// The program file.
    pub fn file(&self) -> PathBuf {
        PathBuf::from(self.program.first().map_or("", String::as_str))
    }

    /// The arguments for `main`.
    pub fn args(&self) -> &[String] {
        self.program.get(1..).unwrap_or(&[])
    }
}

/// The `vm` binary: parses `std::env::args_os()` and runs the command.
pub fn main_entry() -> ExitCode {
    // The binaries count their allocations (`alloc`), which the memory budget needs.
    vm_sched::budget::install_memory_probe(alloc::in_use);
    ExitCode::from(run_cli(std::env::args_os()))
}

/// Parses `args` (the first is the program name) and runs the command; returns the exit status.
pub fn run_cli<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" that print to stdout and exit 0; clap picks
            // the stream and the colours.
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    if let Command::Repl(args) = cli.command {
        // The REPL installs its own logging, which writes above the prompt.
        return repl::main(args, cli.trace);
    }
    repl::logging::init_for_run(cli.trace);
    let mut stderr = std::io::stderr();
    run_command(cli.command, &mut stderr, Style::for_stderr())
}

/// Runs a parsed command, writing the CLI's messages to `err` (standard error for the binary;
/// tests pass a buffer). Returns the exit status.
pub fn run_command(command: Command, err: &mut dyn std::io::Write, style: Style) -> u8 {
    let mut say = |s: &str| {
        // Nothing sensible can be done if standard error itself fails.
        let _ = err.write_all(s.as_bytes()).and_then(|()| err.flush());
    };
    let result = match command {
        Command::Run(run) => cmd_run(run, style),
        Command::Asm { file, output } => cmd_asm(&file, output, style),
        Command::Disasm { file } => cmd_disasm(&file),
        Command::Check { file, lib } => cmd_check(&file, lib, style),
        Command::Repl(args) => return repl::main(args, false),
        Command::Resume(args) => cmd_resume(args, &mut say, style),
        Command::Node(args) => cmd_node(args, style),
        Command::Nodes(args) => cmd_nodes(&args),
        Command::Up(args) => cmd_up(args, style),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err((status, message)) => {
            say(&message);
            status
        }
    }
}

/// A command's failure: the exit status and the text for standard error.
type Failure = (u8, String);

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Assembles `file` and verifies the result; on failure the rendered errors.
fn assemble_and_verify(file: &Path, style: Style) -> Result<Module, String> {
    let name = display(file);
    let mut loader = Keeping::default();
    let module = vm_core::asm::assemble(&name, &mut loader)
        .map_err(|errors| render::asm_errors(&name, &errors, style))?;
    vm_core::verify::verify(&module)
        .map_err(|errors| render::verify_errors(&name, Some(&module), &errors, &loader.sources, style))?;
    Ok(module)
}

/// The file system's loader, keeping the text of every file it loads, so that a verifier error
/// in a module that assembled can be drawn with its source line.
#[derive(Default)]
struct Keeping {
    sources: Vec<(String, String)>,
}

impl vm_core::asm::SourceLoader for Keeping {
    fn load(&mut self, path: &str, from: Option<&str>) -> Result<(String, String), vm_core::asm::LoadError> {
        let (name, text) = vm_io::FsLoader::new().load(path, from)?;
        self.sources.push((name.clone(), text.clone()));
        Ok((name, text))
    }
}

/// Reads, decodes and verifies a `.vbc` module; on failure the rendered error.
fn load_module(file: &Path) -> Result<Module, String> {
    let bytes = read_file(file)?;
    decode_module(file, &bytes)
}

fn read_file(file: &Path) -> Result<Vec<u8>, String> {
    vm_io::fs::read_bytes(file).map_err(|e| format!("error: cannot read {}: {e}\n", display(file)))
}

/// Decodes and verifies module bytes read from `file`.
fn decode_module(file: &Path, bytes: &[u8]) -> Result<Module, String> {
    let name = display(file);
    let module = vm_core::bytecode::decode(bytes).map_err(|e| load_error(&name, None, e))?;
    vm_core::verify::verify(&module)
        .map_err(|errors| load_error(&name, Some(&module), vm_core::bytecode::LoadError::Verify(errors)))?;
    Ok(module)
}

/// A program for `vm run`, `vm check` and the REPL's `load`: a module when the file starts with
/// the `.vbc` magic bytes, whatever its name; otherwise assembly source. A file named `.vbc`
/// that is not text either is reported as a module that failed to decode (its magic is wrong),
/// which says more than an assembler error about its first byte would.
pub(crate) fn load_program(file: &Path, style: Style) -> Result<Module, String> {
    let bytes = read_file(file)?;
    let named_vbc = file.extension().is_some_and(|e| e == "vbc");
    if bytes.starts_with(&vm_core::bytecode::MAGIC) || (named_vbc && std::str::from_utf8(&bytes).is_err()) {
        decode_module(file, &bytes)
    } else {
        assemble_and_verify(file, style)
    }
}

fn load_error(name: &str, module: Option<&Module>, e: vm_core::bytecode::LoadError) -> String {
    match e {
        vm_core::bytecode::LoadError::Verify(errors) => {
            render::verify_errors(name, module, &errors, &[], Style::plain())
        }
        other => format!("error: {name}: {other}\n"),
    }
}

fn cmd_run(run: RunArgs, style: Style) -> Result<(), Failure> {
    let file = run.file();
    let module = load_program(&file, style).map_err(|msg| (EXIT_USAGE, msg))?;
    let mut opts = run.runtime.run_options().map_err(|msg| (EXIT_USAGE, msg))?;
    opts.cluster = run.cluster.cluster_options().map_err(|msg| (EXIT_USAGE, msg))?;
    if opts.cluster.is_some() && run.snapshots.snapshot.is_some() {
        return Err((
            EXIT_USAGE,
            "error: --snapshot cannot be combined with --node (a cluster node's links cannot be saved)\n"
                .into(),
        ));
    }
    let module = Arc::new(module);
    let result = match &run.snapshots.snapshot {
        None => vm_sched::block_on_run(module, run.args().to_vec(), opts),
        Some(path) => {
            let persist = vm_sched::persist::Persist {
                path: path.clone(),
                every: run.snapshots.snapshot_every,
                on_term: run.snapshots.snapshot_on_term,
                keep: run.snapshots.snapshot_keep as usize,
            };
            let start = vm_sched::persist::Start::Fresh(module, run.args().to_vec());
            vm_sched::persist::block_on_persistent(start, opts, persist)
        }
    };
    match outcome_report(&display(&file), result) {
        (EXIT_OK, _) => Ok(()),
        failure => Err(failure),
    }
}

fn cmd_resume(args: ResumeArgs, say: &mut dyn FnMut(&str), style: Style) -> Result<(), Failure> {
    let name = display(&args.path);
    let (snapshot, refused) =
        vm_sched::persist::load(&args.path).map_err(|e| (EXIT_USAGE, format!("error: {e}\n")))?;
    for (file, why) in refused {
        say(&format!("warning: skipped {}: {why}\n", display(&file)));
    }
    let perms = args.perms.permissions().map_err(|msg| (EXIT_USAGE, msg))?;
    if let Some(manifest) = &args.manifest {
        if perms != vm_io::Permissions::default() {
            return Err((
                EXIT_USAGE,
                "error: --allow-* cannot be combined with --manifest: each container gets exactly \
                 the grants of its manifest entry\n"
                    .into(),
            ));
        }
        return resume_containers(manifest.clone(), args, snapshot, style);
    }
    if !snapshot.containers.is_empty() {
        return Err((
            EXIT_USAGE,
            format!("error: {name}: {}\n", vm_sched::persist::CONTAINERS_NEED_A_MANIFEST),
        ));
    }
    let max_memory = args.max_memory.or_else(vm_io::sysmem::default_budget);
    let opts = RunOptions { workers: args.workers, perms, max_memory, ..RunOptions::default() };
    let timers = match args.timers {
        TimersArg::Frozen => vm_sched::snapshot::Timers::Frozen,
        TimersArg::Wall => vm_sched::snapshot::Timers::Wall,
    };
    let persist = vm_sched::persist::Persist::from_schedule(args.path.clone(), snapshot.meta.schedule);
    let start = vm_sched::persist::Start::Resume(Box::new(snapshot), timers);
    match outcome_report(&name, vm_sched::persist::block_on_persistent(start, opts, persist)) {
        (EXIT_OK, _) => Ok(()),
        failure => Err(failure),
    }
}

#[allow(clippy::print_stderr, reason = "vm-cli prints: the line scripts wait for, once the node serves")]
fn cmd_node(args: NodeArgs, style: Style) -> Result<(), Failure> {
    let file = display(&args.file);
    let module = load_program(&args.file, style).map_err(|msg| (EXIT_USAGE, msg))?;
    let mut opts = args.runtime.run_options().map_err(|msg| (EXIT_USAGE, msg))?;
    opts.cluster = args.cluster.cluster_options().map_err(|msg| (EXIT_USAGE, msg))?;
    if opts.cluster.is_none() {
        return Err((EXIT_USAGE, "error: vm node needs --node NAME and --cluster nats://HOST:PORT\n".into()));
    }
    let result = vm_sched::run::block_on_node(Arc::new(module), opts, |me| {
        // The line scripts and tests wait for: the node serves spawns from now on.
        eprintln!("node {} is up (incarnation {})", me.name, me.inc);
    });
    match outcome_report(&file, result) {
        (EXIT_OK, _) => Ok(()),
        failure => Err(failure),
    }
}

fn cmd_nodes(args: &NodesArgs) -> Result<(), Failure> {
    let opts = args.nats.observer().map_err(|msg| (EXIT_USAGE, msg))?;
    let nodes = vm_sched::run::block_on_census(&opts).map_err(|e| (EXIT_USAGE, format!("error: {e}\n")))?;
    let mut out = String::from("NODE\tINCARNATION\tACTORS\tUPTIME\n");
    for n in &nodes {
        out.push_str(&format!("{}\t{}\t{}\t{}\n", n.id.name, n.id.inc, n.actors, uptime(n.uptime_ms)));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err((EXIT_USAGE, format!("error: cannot write to standard output: {e}\n")))
        }
        _ => Ok(()),
    }
}

/// An uptime for people: `42s`, `3m07s`, `5h02m`, `2d03h`.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `vm up`: loads the manifest and every module it names (any error is a usage error, exit 2,
/// with its location), then runs the containers; what happens to them is told on stderr.
fn cmd_up(args: UpArgs, style: Style) -> Result<(), Failure> {
    let name = display(&args.manifest);
    let entries = read_manifest(&args.manifest)?;
    let specs = load_modules(entries, style)?;
    let max_memory = args.max_memory.or_else(vm_io::sysmem::default_budget);
    let opts = RunOptions { workers: args.workers, max_memory, ..RunOptions::default() };
    let persist = args.snapshots.snapshot.as_ref().map(|path| vm_sched::persist::Persist {
        path: path.clone(),
        every: args.snapshots.snapshot_every,
        on_term: args.snapshots.snapshot_on_term,
        keep: args.snapshots.snapshot_keep as usize,
    });
    let start = vm_sched::up::UpStart::Fresh(specs);
    up_outcome(&name, vm_sched::up::block_on_up_with(start, opts, persist, up_report()))
}

/// `vm resume --manifest M PATH`: a VM of containers, each with the grants of its entry in `M`
/// and nothing else; a container of the snapshot that `M` lacks is refused, naming it.
fn resume_containers(
    manifest: PathBuf,
    args: ResumeArgs,
    snapshot: vm_core::snapshot::Snapshot,
    style: Style,
) -> Result<(), Failure> {
    let name = display(&args.path);
    if snapshot.containers.is_empty() {
        return Err((
            EXIT_USAGE,
            format!(
                "error: {name}: the snapshot is of one program (`vm run`), not of containers: resume it \
                 without --manifest, granting with --allow-*\n"
            ),
        ));
    }
    let entries = read_manifest(&manifest)?;
    let (grants, fresh) = vm_sched::snapshot::grants_from_manifest(&snapshot, entries)
        .map_err(|e| (EXIT_USAGE, format!("error: {name}: {e}\n")))?;
    let fresh = load_modules(fresh, style)?;
    let max_memory = args.max_memory.or_else(vm_io::sysmem::default_budget);
    let opts = RunOptions { workers: args.workers, max_memory, ..RunOptions::default() };
    let timers = match args.timers {
        TimersArg::Frozen => vm_sched::snapshot::Timers::Frozen,
        TimersArg::Wall => vm_sched::snapshot::Timers::Wall,
    };
    let persist = vm_sched::persist::Persist::from_schedule(args.path.clone(), snapshot.meta.schedule);
    let start = vm_sched::up::UpStart::Resume { snapshot: Box::new(snapshot), timers, grants, fresh };
    up_outcome(&display(&manifest), vm_sched::up::block_on_up_with(start, opts, Some(persist), up_report()))
}

/// Reads and checks a manifest (a usage error, exit 2, with its location).
fn read_manifest(path: &Path) -> Result<Vec<vm_sched::manifest::Entry>, Failure> {
    let name = display(path);
    let text = String::from_utf8(read_file(path).map_err(|msg| (EXIT_USAGE, msg))?)
        .map_err(|_| (EXIT_USAGE, format!("error: {name}: the manifest is not UTF-8 text\n")))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    vm_sched::manifest::parse(&text, dir).map_err(|e| (EXIT_USAGE, format!("error: {name}:{e}\n")))
}

/// Loads the module of each manifest entry, as `vm run` loads its file.
fn load_modules(
    entries: Vec<vm_sched::manifest::Entry>,
    style: Style,
) -> Result<Vec<vm_sched::container::ContainerSpec>, Failure> {
    let mut specs = Vec::with_capacity(entries.len());
    for e in entries {
        let module = load_program(&e.module, style).map_err(|msg| (EXIT_USAGE, msg))?;
        specs.push(e.with_module(Arc::new(module)));
    }
    Ok(specs)
}

/// Where `vm up` (and `vm resume --manifest`) tell what happens to their containers.
fn up_report() -> vm_sched::up::Report {
    Arc::new(|line: &str| {
        vm_io::stdio::write_stderr(format!("vm up: {line}\n").as_bytes());
    })
}

/// The exit status and message for how `vm up` ended.
fn up_outcome(name: &str, result: Result<vm_sched::up::UpOutcome, RunError>) -> Result<(), Failure> {
    use vm_sched::up::UpOutcome;
    match result {
        Ok(UpOutcome::AllEnded | UpOutcome::Snapshotted) => Ok(()),
        Ok(UpOutcome::PermanentEnded { crashed: false, .. }) => Ok(()),
        Ok(UpOutcome::PermanentEnded { name, reason, crashed: true }) => {
            Err((EXIT_EXCEPTION, format!("error: permanent container {name} crashed with reason {reason}\n")))
        }
        Ok(UpOutcome::Deadlock(mut report)) => {
            if !report.ends_with('\n') {
                report.push('\n');
            }
            Err((EXIT_DEADLOCK, report))
        }
        Ok(UpOutcome::StartFailed(msg)) => Err((EXIT_USAGE, format!("error: {name}: {msg}\n"))),
        Err(e @ RunError::Panicked(_)) => Err((EXIT_INTERNAL, format!("error: {e}\n"))),
        Err(e) => Err((EXIT_USAGE, format!("error: {name}: {e}\n"))),
    }
}

/// The exit status and stderr text for how a run ended.
pub fn outcome_report(file: &str, result: Result<Outcome, RunError>) -> (u8, String) {
    match result {
        Ok(Outcome::Exited(_)) => (EXIT_OK, String::new()),
        Ok(Outcome::Failed { fault, location }) => (EXIT_EXCEPTION, render::uncaught(&fault, &location)),
        // The scheduler already reports `stop :normal` as `Exited`; keep the rule here too.
        Ok(Outcome::Stopped(reason)) if reason == Value::Atom(vm_core::atoms::NORMAL) => {
            (EXIT_OK, String::new())
        }
        Ok(Outcome::Stopped(reason)) => (EXIT_EXCEPTION, render::stopped(&reason)),
        Ok(Outcome::Deadlock(report)) => {
            let mut report = report;
            if !report.ends_with('\n') {
                report.push('\n');
            }
            (EXIT_DEADLOCK, report)
        }
        Err(e @ RunError::Panicked(_)) => (EXIT_INTERNAL, format!("error: {e}\n")),
        Err(e) => (EXIT_USAGE, format!("error: {file}: {e}\n")),
    }
}

/// The default output of `vm asm FILE`: FILE with its extension replaced by `.vbc`.
pub fn default_output(file: &Path) -> PathBuf {
    file.with_extension("vbc")
}

fn cmd_asm(file: &Path, output: Option<PathBuf>, style: Style) -> Result<(), Failure> {
    let module = assemble_and_verify(file, style).map_err(|msg| (EXIT_USAGE, msg))?;
    let output = output.unwrap_or_else(|| default_output(file));
    if output == file {
        let msg = format!("error: refusing to overwrite the source {} with the module\n", display(file));
        return Err((EXIT_USAGE, msg));
    }
    let bytes = vm_core::bytecode::encode(&module);
    vm_io::fs::write_bytes(&output, &bytes)
        .map_err(|e| (EXIT_USAGE, format!("error: cannot write {}: {e}\n", display(&output))))
}

fn cmd_disasm(file: &Path) -> Result<(), Failure> {
    let module = load_module(file).map_err(|msg| (EXIT_USAGE, msg))?;
    let text = vm_core::disasm::disassemble(&module);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // The reader went away (`vm disasm x.vbc | head`): not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err((EXIT_USAGE, format!("error: cannot write to standard output: {e}\n"))),
    }
}

fn cmd_check(file: &Path, lib: bool, style: Style) -> Result<(), Failure> {
    let module = load_program(file, style).map_err(|msg| (EXIT_USAGE, msg))?;
    if lib {
        return Ok(());
    }
    // What `vm run` would refuse before starting (the same check, so the two cannot disagree).
    vm_sched::run::check_main(&module).map_err(|e| {
        let msg = format!(
            "error: {}: {e}\n  help: a library, whose functions other programs include, is checked with \
             `vm check --lib`\n",
            display(file)
        );
        (EXIT_USAGE, msg)
    })
}

/// The clap command, for documentation generators and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests;
