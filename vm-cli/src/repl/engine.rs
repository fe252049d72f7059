//! What the REPL's commands do: the loaded programs, the session, and the text each command
//! answers with. No terminal here: [`Engine::execute`] takes a line and returns a [`Reply`], so the
//! whole command set is tested in-process.
//!
//! **Programs.** `load` assembles and verifies a file (or reads a `.vbc`) into a module; every
//! loaded program stays available, newest last. A function name is looked up in the newest
//! program that defines it. Actors keep the module they were spawned from, so reloading a file
//! does not change running actors.
//!
//! **Eval.** A snippet becomes the body of a function `repl.eval` of no arguments, appended to the
//! disassembly of the newest program (so it can call that program's functions; the disassembly
//! re-assembles to the same code), with `.file "eval"` and `.line K` before its K-th
//! instruction, so locations in errors read `eval:K`. A `ret r0` is appended, which makes the
//! result r0 when the snippet falls through. The module is verified and the function run as a
//! temporary actor; the REPL waits for it, and Ctrl-C stops it (a mode-2 interrupt).

use super::command::{self, COMMANDS, Command, Target};
use super::logging::ActorRecords;
use crate::render::{self, Style};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_core::{Atom, Exception, Module, Pid, Value};
use vm_sched::container::{Container, ContainerSpec, Restart, Status};
use vm_sched::{ActorInfo, EvalEnd, ExecutorInfo, Outcome, RunState, Session, Vm};

/// The file name locations in a snippet report.
pub const EVAL_FILE: &str = "eval";
/// The function a snippet becomes.
pub const EVAL_FUNC: &str = "repl.eval";

/// What `eval` answers when Ctrl-C stopped the snippet.
pub const INTERRUPTED: &str = "error: interrupted (Ctrl-C)";

/// How long `kill` waits for the actor to be gone before reporting.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Text to show (without a trailing newline).
    Text(String),
    /// An error, ready to show (each line starts with `error:` or continues a rendered report).
    Error(String),
    /// Nothing to show.
    Nothing,
    /// Leave the REPL.
    Quit,
}

/// A loaded program.
struct Program {
    file: String,
    module: Arc<Module>,
}

/// Names the line editor completes: functions of loaded programs, live pids and registered names.
#[derive(Clone)]
pub struct Completions {
    vm: Vm,
    funcs: Arc<Mutex<Vec<String>>>,
}

impl Completions {
    /// Function names of every loaded program, sorted, without duplicates.
    pub fn functions(&self) -> Vec<String> {
        self.funcs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Live actors as `<N>`, then registered names as `:name`.
    pub fn actors(&self) -> Vec<String> {
        let actors = self.vm.actors();
        let mut out: Vec<String> = actors.iter().map(|a| a.pid.to_string()).collect();
        out.extend(actors.iter().filter_map(|a| a.name).map(|n| Value::Atom(n).repr()));
        out
    }
}

/// The REPL's state; see the module docs.
pub struct Engine {
    session: Session,
    programs: Vec<Program>,
    /// `checkpoint`s, oldest first.
    checkpoints: Vec<vm_core::snapshot::Snapshot>,
    records: Arc<ActorRecords>,
    funcs: Arc<Mutex<Vec<String>>>,
    style: Style,
    /// The container `enter` chose: `spawn` and `eval` run there.
    entered: Option<Arc<Container>>,
}

impl Engine {
    /// An engine over `session`; `records` is the actor log installed with the session's
    /// logging (`logging::init_for_repl`).
    pub fn new(session: Session, records: Arc<ActorRecords>, style: Style) -> Engine {
        Engine {
            session,
            programs: Vec::new(),
            checkpoints: Vec::new(),
            records,
            funcs: Arc::default(),
            style,
            entered: None,
        }
    }

    /// The data the line editor completes from.
    pub fn completions(&self) -> Completions {
        Completions { vm: self.session.vm().clone(), funcs: self.funcs.clone() }
    }

    /// Runs one input line.
    pub fn execute(&mut self, line: &str) -> Reply {
        let result = match command::parse(line) {
            Ok(None) => return Reply::Nothing,
            Ok(Some(Command::Quit)) => return Reply::Quit,
            Ok(Some(cmd)) => self.run(cmd),
            Err(e) => Err(e),
        };
        match result {
            Ok(text) if text.is_empty() => Reply::Nothing,
            Ok(text) => Reply::Text(text),
            // A rendered report (assembly errors) already has its `error:` lines, or starts with
            // an indented source snippet.
            Err(e) if e.starts_with("error") || e.starts_with(char::is_whitespace) => {
                Reply::Error(e.trim_end().to_string())
            }
            Err(e) => Reply::Error(format!("error: {e}")),
        }
    }

    fn run(&mut self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::Help(topic) => help(topic.as_deref()),
            Command::Load(file) => self.load(&file),
            Command::Spawn { func, args } => self.spawn(&func, &args),
            Command::Ps(None) => Ok(ps(&self.session.vm().actors())),
            Command::Ps(Some(name)) => {
                let vm = self.session.vm();
                vm.container(&name).ok_or_else(|| format!("no container named {name}"))?;
                let actors: Vec<ActorInfo> =
                    vm.actors().into_iter().filter(|a| a.container == name).collect();
                Ok(ps(&actors))
            }
            Command::Containers => Ok(containers(self.session.vm())),
            Command::Enter(None) => Ok(match self.entered.take() {
                Some(c) => format!("left container {}", c.name()),
                None => String::new(),
            }),
            Command::Enter(Some(name)) => {
                let c =
                    self.session.vm().container(&name).ok_or_else(|| format!("no container named {name}"))?;
                if c.status() != Status::Running {
                    return Err(format!("container {name} is not running (`restart {name}` starts it)"));
                }
                self.entered = Some(c);
                Ok(format!("entered container {name}: spawn and eval run there"))
            }
            Command::Start { name, file, grants } => {
                let spec = self.container_spec(&name, &file, &grants)?;
                let c = self.session.start_container(spec)?;
                Ok(format!(
                    "started container {name}: root {}",
                    c.root().map_or("-".into(), |p| p.to_string())
                ))
            }
            Command::Stop(name) => self.stop(&name).map(|()| format!("stopped container {name}")),
            Command::Restart(name) => {
                let c =
                    self.session.vm().container(&name).ok_or_else(|| format!("no container named {name}"))?;
                if c.status() == Status::Running {
                    self.stop(&name)?;
                }
                let c = self.session.start_container(c.spec.clone())?;
                Ok(format!(
                    "restarted container {name}: root {}",
                    c.root().map_or("-".into(), |p| p.to_string())
                ))
            }
            Command::Executors => Ok(executors(&self.session.vm().executors())),
            Command::Nodes => {
                let n =
                    self.session.vm().node().ok_or(
                        "this session is not a node of a cluster (vm repl --node NAME --cluster URL)",
                    )?;
                Ok(nodes(&n.me().name, &n.nodes()))
            }
            Command::Info(t) => self.info(t),
            Command::Send(t, v) => {
                let pid = self.resolve(t)?;
                self.session.send(pid, v).map(|()| String::new())
            }
            Command::Interrupt(t, mode) => {
                let pid = self.resolve(t)?;
                let exc = Exception::new(Atom::new("interrupted"), "interrupted from the REPL");
                self.session.interrupt(pid, exc, mode).map(|()| String::new())
            }
            Command::Kill(t) => {
                let pid = self.resolve(t)?;
                self.session.kill(pid)?;
                if self.session.wait_gone(pid, KILL_WAIT) {
                    Ok(String::new())
                } else {
                    Err(format!("{pid} was sent a kill but is still alive after {} s", KILL_WAIT.as_secs()))
                }
            }
            Command::Eval(instrs) => self.eval(&instrs),
            Command::Trace(t, on) => {
                let pid = self.resolve(t)?;
                if on && self.session.vm().lookup(pid).is_none() {
                    return Err(format!("no live actor {pid}"));
                }
                self.records.set_traced(pid.0, on);
                Ok(if on { format!("tracing {pid}") } else { format!("stopped tracing {pid}") })
            }
            Command::Snapshot(file) => {
                let s = self.session.snapshot()?;
                let n = s.actors.len();
                self.session.write_snapshot(s, std::path::Path::new(&file))?;
                Ok(format!("{n} actors written to {file}"))
            }
            Command::Checkpoint => {
                let s = self.session.snapshot()?;
                let n = s.actors.len();
                self.checkpoints.push(s);
                Ok(format!("checkpoint {} ({n} actors)", self.checkpoints.len()))
            }
            Command::Rewind(n) => {
                let Some(i) = self.checkpoints.len().checked_sub(n) else {
                    return Err(format!("there are {} checkpoints", self.checkpoints.len()));
                };
                let s = self.checkpoints[i].clone();
                let actors = s.actors.len();
                let pids: Vec<u64> = s.actors.iter().map(|a| a.pid).collect();
                self.session.rewind(s)?;
                // The killed actors' exits are not the rewound actors' history.
                pids.iter().for_each(|&pid| self.records.forget(pid));
                Ok(format!("rewound to checkpoint {} ({actors} actors)", i + 1))
            }
            Command::Quit => Ok(String::new()),
        }
    }

    /// Stops a container and waits until its actors (and so their resources) are gone.
    fn stop(&mut self, name: &str) -> Result<(), String> {
        if self.session.stop_container(name, KILL_WAIT)? {
            Ok(())
        } else {
            Err(format!(
                "container {name} was stopped but some of its actors are alive after {} s",
                KILL_WAIT.as_secs()
            ))
        }
    }

    /// The container `start NAME FILE GRANTS...` describes.
    fn container_spec(&self, name: &str, file: &str, grants: &[String]) -> Result<ContainerSpec, String> {
        let mut flags = crate::PermFlags::default();
        let mut allow_lookup = Vec::new();
        let mut restart = Restart::Temporary;
        let mut args = Vec::new();
        for g in grants {
            if !g.starts_with("--") {
                args.push(g.clone());
                continue;
            }
            let (flag, value) = match g.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (g.as_str(), None),
            };
            match flag {
                "--allow-net" => flags.allow_net = Some(value),
                "--allow-read" => flags.allow_read = Some(value),
                "--allow-write" => flags.allow_write = Some(value),
                "--allow-env" => flags.allow_env = Some(value),
                "--allow-lookup" => match value {
                    Some(v) if !v.is_empty() => allow_lookup.extend(v.split(',').map(str::to_string)),
                    _ => return Err("--allow-lookup needs container names: --allow-lookup=NAME,...".into()),
                },
                "--restart" => {
                    restart = value.as_deref().and_then(Restart::parse).ok_or(
                        "--restart needs a restart type: --restart=permanent, transient or temporary",
                    )?;
                }
                other => {
                    return Err(format!(
                        "`{other}` is not a grant (--allow-net, --allow-read, --allow-write, --allow-env, \
                         --allow-lookup; or --restart)"
                    ));
                }
            }
        }
        let perms =
            flags.permissions().map_err(|e| e.trim_end().trim_start_matches("error: ").to_string())?;
        let module = crate::load_program(Path::new(file), self.style)?;
        Ok(ContainerSpec {
            name: name.to_string(),
            module: Arc::new(module),
            source: file.to_string(),
            args,
            grants: vm_io::Grants::of(perms),
            allow_lookup,
            limits: Default::default(),
            restart,
            intensity: Default::default(),
            priority: Default::default(),
        })
    }

    /// The pid a target names.
    fn resolve(&self, t: Target) -> Result<Pid, String> {
        match t {
            Target::Pid(p) => Ok(p),
            Target::Remote(node, serial) => {
                let n =
                    self.session.vm().node().ok_or(
                        "this session is not a node of a cluster (vm repl --node NAME --cluster URL)",
                    )?;
                let id = n.live(&node.name()).ok_or_else(|| format!("node {node} is not up"))?;
                n.pid_of(&id, serial).ok_or_else(|| format!("<{node}.{serial}> is not a pid"))
            }
            // A name is looked up in the entered container's registry (each has its own).
            Target::Name(n) => {
                let vm = self.session.vm();
                let container = self.entered.as_ref().unwrap_or(vm.default_container());
                vm.whereis_in(container, n)
                    .ok_or_else(|| format!("no actor is registered as {}", Value::Atom(n).repr()))
            }
        }
    }

    /// Loads a program; see the module docs.
    pub fn load(&mut self, file: &str) -> Result<String, String> {
        let path = Path::new(file);
        let module = crate::load_program(path, self.style)?;
        let names: Vec<String> = module.funcs.iter().map(|f| f.name.clone()).collect();
        self.programs.retain(|p| p.file != file);
        let module = Arc::new(module);
        self.programs.push(Program { file: file.to_string(), module: module.clone() });
        // A node serves spawns of the newest program's functions.
        self.session.serve(module);
        let mut all: Vec<String> =
            self.programs.iter().flat_map(|p| p.module.funcs.iter().map(|f| f.name.clone())).collect();
        all.sort();
        all.dedup();
        *self.funcs.lock().unwrap_or_else(|e| e.into_inner()) = all;
        const SHOWN: usize = 12;
        let mut list = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > SHOWN {
            list.push_str(", ...");
        }
        Ok(format!("loaded {file}: {} ({list})", render::count(names.len(), "function")))
    }

    /// Leaves the cluster gracefully, if the session is a node.
    pub fn leave_cluster(&self) {
        self.session.leave_cluster();
    }

    /// Joins the cluster `opts` names, serving spawns of the newest program's functions (of
    /// each program loaded later, from then on); says which node this is.
    pub fn join_cluster(&self, opts: &vm_sched::cluster::ClusterOptions) -> Result<String, String> {
        let module = self.programs.last().map_or_else(
            || Arc::new(Module { consts: vec![], funcs: vec![], debug: None }),
            |p| p.module.clone(),
        );
        let me = self.session.join_cluster(module, opts)?;
        Ok(format!("node {} is up (incarnation {})", me.name, me.inc))
    }

    fn spawn(&mut self, func: &str, args: &[String]) -> Result<String, String> {
        let module = match &self.entered {
            // Inside a container: its module, and nothing else.
            Some(c) if c.spec.module.func_index(func).is_some() => c.spec.module.clone(),
            Some(c) => return Err(format!("no function named `{func}` in container {}'s module", c.name())),
            None => {
                let Some(program) = self.programs.iter().rev().find(|p| p.module.func_index(func).is_some())
                else {
                    return Err(if self.programs.is_empty() {
                        format!("no function named `{func}`: no program is loaded (use `load FILE`)")
                    } else {
                        format!("no function named `{func}` in the loaded programs")
                    });
                };
                program.module.clone()
            }
        };
        let arity = module.func_index(func).map_or(0, |i| module.funcs[i as usize].arity);
        let values = if func == "main" && arity == 1 {
            // As `vm run` passes its arguments: a list of strings. A string literal stands for
            // its contents, so arguments with spaces can be written.
            let strings = args.iter().map(|a| match vm_core::asm::parse_value(a) {
                Ok(s @ Value::Str(_)) => s,
                _ => Value::str(a.as_str()),
            });
            vec![Value::list(strings.collect())]
        } else {
            let mut values = Vec::with_capacity(args.len());
            for (i, a) in args.iter().enumerate() {
                let v = vm_core::asm::parse_value(a).map_err(|e| format!("argument {}: {e}", i + 1))?;
                values.push(v);
            }
            values
        };
        match &self.entered {
            Some(c) => self.session.spawn_in(c, &module, func, values),
            None => self.session.spawn(&module, func, values),
        }
        .map(|pid| pid.to_string())
    }

    fn info(&self, t: Target) -> Result<String, String> {
        let pid = self.resolve(t)?;
        if !pid.is_local() {
            // Another node's actor: what this node knows is where it lives.
            let node = self
                .session
                .vm()
                .node()
                .and_then(|n| n.node_of(pid).map(|id| (n.live(&id.name) == Some(id.clone()), id)));
            return Ok(match node {
                Some((up, id)) => format!(
                    "{pid}\n  node:          {} (incarnation {}, {})\n  (an actor of another node: `info` there shows its state)",
                    id.name,
                    id.inc,
                    if up { "up" } else { "down" }
                ),
                None => format!("{pid} names no node this session knows"),
            });
        }
        let events = self.records.events(pid.0);
        let Some(a) = self.session.vm().info(pid) else {
            if events.is_empty() {
                return Err(format!("no live actor {pid}"));
            }
            let mut out = format!("{pid} is not alive; its last records:");
            for e in events {
                let _ = write!(out, "\n  {e}");
            }
            return Ok(out);
        };
        let pids = |ps: &[Pid]| {
            if ps.is_empty() {
                "none".to_string()
            } else {
                ps.iter().map(Pid::to_string).collect::<Vec<_>>().join(", ")
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "{pid}");
        let _ = writeln!(out, "  name:          {}", a.name.map_or("none".into(), |n| Value::Atom(n).repr()));
        let _ = writeln!(out, "  state:         {}", state(&a));
        let _ = writeln!(out, "  at:            {}", a.location);
        let _ = writeln!(out, "  mailbox:       {}", render::count(a.mailbox_len, "message"));
        let _ = writeln!(out, "  reductions:    {}", a.reductions);
        let _ = writeln!(out, "  links:         {}", pids(&a.links));
        let _ = writeln!(out, "  monitoring:    {}", pids(&a.monitoring));
        let _ = writeln!(out, "  monitored by:  {}", pids(&a.monitored_by));
        let _ = writeln!(out, "  traps exits:   {}", if a.trap_exit { "yes" } else { "no" });
        if a.resources.is_empty() {
            let _ = writeln!(out, "  resources:     none");
        } else {
            let _ = writeln!(out, "  resources:");
            for (id, label) in &a.resources {
                let _ = writeln!(out, "    #res<{id}> {label}");
            }
        }
        let _ =
            writeln!(out, "  traced:        {}", if self.records.is_traced(pid.0) { "yes" } else { "no" });
        if events.is_empty() {
            let _ = write!(out, "  exceptions:    none seen");
        } else {
            let _ = write!(out, "  exceptions:");
            for e in events {
                let _ = write!(out, "\n    {e}");
            }
        }
        Ok(out)
    }

    fn eval(&mut self, instrs: &[String]) -> Result<String, String> {
        let base = match &self.entered {
            Some(c) => Some(c.spec.module.as_ref()),
            None => self.programs.last().map(|p| p.module.as_ref()),
        };
        let src = eval_source(base, instrs);
        let module = vm_core::asm::assemble_str(EVAL_FILE, &src.text).map_err(|errors| {
            let mut out = String::new();
            for d in &errors.diagnostics {
                let place = src
                    .instruction_at(d.line)
                    .map_or_else(String::new, |k| format!("in instruction {} (`{}`): ", k + 1, instrs[k]));
                let hint = d.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
                let _ = writeln!(out, "error: {place}{}{hint}", d.message);
            }
            out
        })?;
        vm_core::verify::verify(&module)
            .map_err(|errors| render::verify_errors(EVAL_FILE, Some(&module), &errors, &[], self.style))?;
        let eval = match &self.entered {
            Some(c) => self.session.eval_in(c, Arc::new(module), EVAL_FUNC)?,
            None => self.session.eval(Arc::new(module), EVAL_FUNC)?,
        };
        match self.session.wait(eval) {
            EvalEnd::Done(Outcome::Exited(v)) => Ok(v.repr()),
            EvalEnd::Done(Outcome::Failed { fault, location }) => Err(format!(
                "uncaught exception {}: {}\n  at {location}",
                fault.exception.kind,
                fault.exception.msg.repr()
            )),
            EvalEnd::Done(Outcome::Stopped(reason)) => {
                Err(format!("the snippet's actor exited with reason {}", reason.repr()))
            }
            EvalEnd::Done(Outcome::Deadlock(report)) => Err(report),
            EvalEnd::Interrupted(_) => Err(INTERRUPTED.to_string()),
        }
    }
}

/// A snippet's module source and where each instruction landed.
struct EvalSource {
    text: String,
    /// The source line of each instruction, in order.
    lines: Vec<u32>,
}

impl EvalSource {
    fn instruction_at(&self, line: u32) -> Option<usize> {
        self.lines.iter().position(|&l| l == line)
    }
}

/// Builds the module source for a snippet; see the module docs.
fn eval_source(base: Option<&Module>, instrs: &[String]) -> EvalSource {
    let mut text = String::new();
    if let Some(m) = base {
        let program = vm_core::disasm::disassemble(m);
        // `.nodebug` would drop the snippet's locations too.
        text.push_str(program.strip_prefix(".nodebug\n").unwrap_or(&program));
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    let _ = writeln!(text, ".file \"{EVAL_FILE}\"\n.func {EVAL_FUNC} 0");
    let mut line = text.lines().count() as u32;
    let mut lines = Vec::with_capacity(instrs.len());
    for (k, instr) in instrs.iter().enumerate() {
        let _ = writeln!(text, ".line {}\n    {instr}", k + 1);
        line += 2;
        lines.push(line);
    }
    let _ = writeln!(text, "    ret r0\n.end");
    EvalSource { text, lines }
}

/// An actor's state and what it waits on.
fn state(a: &ActorInfo) -> String {
    match (a.state, &a.waiting) {
        (RunState::Running, _) => "running".into(),
        (RunState::Runnable, _) => "runnable".into(),
        (RunState::Waiting, Some(w)) => format!("waiting: {w}"),
        (RunState::Waiting, None) => "waiting".into(),
        (RunState::RealBlocked, Some(w)) => format!("blocked: {w}"),
        (RunState::RealBlocked, None) => "blocked in a native call".into(),
        (RunState::Exited, _) => "exited".into(),
    }
}

/// The `ps` table.
pub fn ps(actors: &[ActorInfo]) -> String {
    let header = ["PID", "NAME", "STATE", "MAILBOX", "REDUCTIONS", "AT"];
    let rows: Vec<[String; 6]> = actors
        .iter()
        .map(|a| {
            let at = match a.location.line {
                Some(line) => format!("{}:{line}", a.location.func),
                None => format!("{} (instruction {})", a.location.func, a.location.pc),
            };
            [
                a.pid.to_string(),
                a.name.map_or("-".into(), |n| Value::Atom(n).repr()),
                state(a),
                a.mailbox_len.to_string(),
                a.reductions.to_string(),
                at,
            ]
        })
        .collect();
    let mut out = table(&header, &rows);
    if rows.is_empty() {
        out.push_str("\n(no live actors)");
    }
    out
}

/// The `nodes` table: the other live nodes, as this node `me` sees them.
pub fn nodes(me: &str, list: &[vm_dist::NodeInfo]) -> String {
    let header = ["NODE", "INCARNATION", "ACTORS", "UPTIME", "LAST HEARD", "PATH"];
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|n| {
            [
                n.id.name.to_string(),
                n.id.inc.to_string(),
                n.actors.to_string(),
                crate::uptime(n.uptime_ms),
                format!("{} ms ago", n.last_heard_ms),
                if n.direct { "direct" } else { "nats" }.to_string(),
            ]
        })
        .collect();
    let mut out = table(&header, &rows);
    let _ = write!(out, "\n(this node: {me})");
    out
}

/// The `containers` table.
pub fn containers(vm: &Vm) -> String {
    let header = ["NAME", "MODULE", "STATUS", "ACTORS", "MAILBOXES", "REDUCTIONS", "GRANTS"];
    let actors = vm.actors();
    let mut all = vec![vm.default_container().clone()];
    all.extend(vm.containers());
    let rows: Vec<[String; 7]> = all
        .iter()
        .map(|c| {
            let mine = actors.iter().filter(|a| a.container == c.name());
            let (mut mailboxes, mut reductions) = (0usize, 0u64);
            for a in mine {
                mailboxes += a.mailbox_len;
                reductions += a.reductions;
            }
            [
                c.name().to_string(),
                if c.spec.source.is_empty() { "-".into() } else { c.spec.source.clone() },
                match c.status() {
                    Status::Running => "running".into(),
                    Status::Ended => "ended".into(),
                },
                c.live().to_string(),
                mailboxes.to_string(),
                reductions.to_string(),
                grants(c),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// A container's grants as the flags that would give them.
fn grants(c: &Container) -> String {
    use vm_io::perms::Grant;
    fn flag<T>(out: &mut Vec<String>, name: &str, g: &Grant<T>, show: impl Fn(&T) -> String) {
        match g {
            Grant::Denied => {}
            Grant::All => out.push(format!("--allow-{name}")),
            Grant::Only(items) => {
                out.push(format!("--allow-{name}={}", items.iter().map(show).collect::<Vec<_>>().join(",")))
            }
        }
    }
    let p = &c.grants.perms;
    let mut out = Vec::new();
    flag(&mut out, "net", &p.net, |r| match r.port {
        Some(port) => format!("{}:{port}", r.host),
        None => r.host.clone(),
    });
    flag(&mut out, "read", &p.read, |d| d.display().to_string());
    flag(&mut out, "write", &p.write, |d| d.display().to_string());
    flag(&mut out, "env", &p.env, String::clone);
    if !c.spec.allow_lookup.is_empty() {
        out.push(format!("--allow-lookup={}", c.spec.allow_lookup.join(",")));
    }
    if out.is_empty() { "none".into() } else { out.join(" ") }
}

/// The `executors` table.
pub fn executors(list: &[ExecutorInfo]) -> String {
    let header = ["EXECUTOR", "QUEUED", "JOBS", "BUSY", "RUNNING"];
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|e| {
            let running = match e.current {
                Some((0, what, d)) => format!("{what} for {} ms", d.as_millis()),
                Some((pid, what, d)) => format!("{what} for <{pid}>, {} ms", d.as_millis()),
                None => "-".into(),
            };
            [
                e.name.clone(),
                e.queued.to_string(),
                e.jobs.to_string(),
                format!("{} ms", e.busy.as_millis()),
                running,
            ]
        })
        .collect();
    let mut out = table(&header, &rows);
    if rows.is_empty() {
        out.push_str("\n(no executors: no thread-affine native has been called)");
    }
    out
}

/// A table with a header, columns aligned (the last one left ragged).
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut put = |cells: &[&str]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    put(header);
    for row in rows {
        put(&row.each_ref().map(String::as_str));
    }
    out.trim_end().to_string()
}

/// The `help` text: every command, one in detail, or the native functions.
pub fn help(topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => {
            let mut out = String::from("Commands (PID is <3>, 3, or a registered name such as :echo):\n");
            let width = COMMANDS.iter().map(|c| c.1.len()).max().unwrap_or(0);
            for (_, usage, summary, _) in COMMANDS {
                let _ = writeln!(out, "  {usage:<width$}  {summary}");
            }
            out.push_str(
                "Values are constants as in assembly: 42, \"text\", :atom, {:ok, [1, 2]}, %{\"k\" => 1}.\n\
                 `help COMMAND` for details, `help natives` for the native functions.\n\
                 Actors' output appears above the prompt. Ctrl-C stops a running eval; Ctrl-D quits.",
            );
            Ok(out)
        }
        Some("natives") => {
            let mut out = String::from("Native functions (`native dst, :name, args, n`):");
            for n in vm_io::natives::all() {
                let _ = write!(out, "\n  {}", n.doc);
            }
            Ok(out)
        }
        Some(name) => match COMMANDS.iter().find(|c| c.0 == name) {
            Some((_, usage, summary, details)) => {
                let mut out = format!("{usage}\n  {summary}");
                if !details.is_empty() {
                    out.push_str("\n\n");
                    out.push_str(&wrap(details, 96, "  "));
                }
                Ok(out)
            }
            None => Err(format!("no help on `{name}`: try `help` for the list of commands")),
        },
    }
}

/// Wraps `text` at spaces to lines of at most `width` characters, each starting with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::printer::Printer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An engine whose actors' output is collected in memory.
    fn engine() -> (Engine, Arc<Mutex<Vec<String>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let got = got.clone();
            Box::new(move |s: String| got.lock().unwrap().push(s))
        };
        let printer = Printer::start(sink).unwrap();
        let opts = vm_sched::RunOptions { workers: std::num::NonZeroUsize::new(2), ..Default::default() };
        let session = Session::new(&opts, Arc::new(printer)).unwrap();
        (Engine::new(session, Arc::new(ActorRecords::default()), Style::plain()), got)
    }

    /// Waits (at most ten seconds) until the actors have printed exactly `want`.
    fn wait_for(out: &Mutex<Vec<String>>, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.lock().unwrap().concat().len() < want.len() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.lock().unwrap().concat(), want);
    }

    /// Writes `text` to a fresh file and returns its path.
    fn program(text: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vm-repl-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.vasm");
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn text(r: Reply) -> String {
        match r {
            Reply::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn error(r: Reply) -> String {
        match r {
            Reply::Error(t) => t,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const COUNTER: &str = "
; counter(n): adds up the numbers it receives and prints each new total.
.func counter 1
    recv r1
    add r0, r0, r1
    print r0
    tcall counter, r0, 1
.end

.func double 1
    add r0, r0, r0
    ret r0
.end

.func main 1
    print r0
    ret r0
.end
";

    #[test]
    fn eval_computes_and_reports_errors() {
        let (mut e, _) = engine();
        assert_eq!(text(e.execute("eval int r0, 2; int r1, 3; add r0, r0, r1; ret r0")), "5");
        assert_eq!(text(e.execute("eval int r0, 2; addi r0, r0, 40")), "42", "falls through to r0");
        assert_eq!(text(e.execute("eval const r0, {:ok, \"a;b\"}")), "{:ok, \"a;b\"}");
        let err = error(e.execute("eval int r0, 1; ad r0, r0, r0"));
        assert!(err.starts_with("error: in instruction 2 (`ad r0, r0, r0`): "), "{err}");
        assert!(err.contains("add"), "the hint names the right mnemonic: {err}");
        let err = error(e.execute("eval int r0, 1; int r1, 0; div r0, r0, r1"));
        assert!(err.starts_with("error: uncaught exception div_by_zero: "), "{err}");
        assert!(err.contains("at eval:3 (in repl.eval, instruction 2)"), "{err}");
        // The REPL is still usable after each error.
        assert_eq!(text(e.execute("eval int r0, 7")), "7");
    }

    #[test]
    fn programs_are_loaded_spawned_and_inspected() {
        let (mut e, out) = engine();
        let file = program(COUNTER);
        let loaded = text(e.execute(&format!("load {file}")));
        assert_eq!(loaded, format!("loaded {file}: 3 functions (counter, double, main)"));
        assert_eq!(e.completions().functions(), ["counter", "double", "main"]);
        // Eval can call the loaded program's functions.
        assert_eq!(text(e.execute("eval int r1, 21; call r0, double, r1, 1")), "42");

        let pid = text(e.execute("spawn counter 0"));
        assert_eq!(pid, "<2>", "eval's actor was <1>");
        assert_eq!(e.execute(&format!("send {pid} 5")), Reply::Nothing);
        assert_eq!(e.execute("send 2 6"), Reply::Nothing);
        wait_for(&out, "5\n11\n");
        // Both messages are taken: the table shows it waiting in `counter`.
        let table = text(e.execute("ps"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("PID  NAME  STATE"), "{table}");
        assert!(lines[1].starts_with("<2>  -     waiting: receive"), "{table}");
        assert!(lines[1].ends_with(&"counter:4".to_string()), "{table}");
        let info = text(e.execute("info <2>"));
        assert!(
            info.starts_with("<2>\n  name:          none\n  state:         waiting: receive\n"),
            "{info}"
        );
        assert!(info.contains("  links:         none\n"), "{info}");

        // `main` taking one argument gets its operands as strings, as from `vm run`.
        assert_eq!(text(e.execute("spawn main 7000 \"a b\"")), "<3>");
        wait_for(&out, "5\n11\n[\"7000\", \"a b\"]\n");

        assert_eq!(e.execute("kill <2>"), Reply::Nothing);
        assert!(!text(e.execute("ps")).contains("<2>"));
        assert_eq!(error(e.execute("kill <2>")), "error: no live actor <2>");
        // With no actor log installed (that takes the process's tracing subscriber; the pty
        // test covers it), nothing is known about an actor that has ended.
        assert_eq!(error(e.execute("info <2>")), "error: no live actor <2>");
    }

    #[test]
    fn executors_are_listed() {
        let (mut e, _) = engine();
        assert_eq!(
            text(e.execute("executors")),
            "EXECUTOR  QUEUED  JOBS  BUSY  RUNNING\n(no executors: no thread-affine native has been called)"
        );
        // An actor opens a SQLite connection (on an executor thread of its own) and keeps it.
        let file = program(
            ".func keep 0\n    const r0, \":memory:\"\n    native r1, :sqlite_open, r0, 1\n    recv r2\n    ret r1\n.end\n",
        );
        text(e.execute(&format!("load {file}")));
        assert_eq!(text(e.execute("spawn keep")), "<1>");
        // Neither the executor's row nor `ps` alone says the call is over: the executor is
        // listed as soon as the call makes it, before the job is queued and before `ps` shows
        // the call (so `ps` shows no call yet), and it counts the job only after the job has
        // handed its result to the actor (which may already be past the call). So wait for
        // both, the row counting the job and `ps` showing no call; the row is checked below.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut table = String::new();
        while std::time::Instant::now() < deadline {
            table = text(e.execute("executors"));
            let row = table.lines().find(|l| l.starts_with("sqlite-1 "));
            let counted = row.and_then(|l| l.split_whitespace().nth(2)).is_some_and(|jobs| jobs != "0");
            if counted && !text(e.execute("ps")).contains("affine") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[1].starts_with("sqlite-1  0       1     ") && lines[1].ends_with("  -"), "{table}");
    }

    #[test]
    fn mistakes_leave_the_engine_usable() {
        let (mut e, _) = engine();
        assert_eq!(
            error(e.execute("spawn counter")),
            "error: no function named `counter`: no program is loaded (use `load FILE`)"
        );
        let file = program(COUNTER);
        text(e.execute(&format!("load {file}")));
        assert_eq!(error(e.execute("spawn nope")), "error: no function named `nope` in the loaded programs");
        assert_eq!(error(e.execute("spawn counter")), "error: `counter` takes 1 argument, not 0");
        assert!(error(e.execute("spawn counter {1,")).starts_with("error: argument 1: "));
        assert_eq!(error(e.execute("send <99> 1")), "error: no live actor <99>");
        assert_eq!(error(e.execute("info :nobody")), "error: no actor is registered as :nobody");
        assert_eq!(error(e.execute("trace 99 on")), "error: no live actor <99>");
        assert_eq!(error(e.execute("bogus")), "error: unknown command `bogus` (type `help` for the list)");
        let bad = program(".func main 0\n    ad r0, r0, r0\n    ret r0\n.end\n");
        let err = error(e.execute(&format!("load {bad}")));
        assert!(err.contains("`ad`") && err.ends_with(&format!("error: 1 error in {bad}")), "{err}");
        assert!(
            error(e.execute("load /nonexistent/x.vbc")).starts_with("error: cannot read /nonexistent/x.vbc")
        );
        // After all that, commands still work.
        assert_eq!(text(e.execute("spawn double 4")), "<1>");
        assert_eq!(e.execute("quit"), Reply::Quit);
    }

    #[test]
    fn help_covers_every_command() {
        let all = help(None).unwrap();
        for (name, usage, _, _) in COMMANDS {
            assert!(all.contains(usage), "{name} is missing from help");
            assert!(help(Some(name)).unwrap().starts_with(usage));
        }
        assert!(help(Some("eval")).unwrap().contains("separated by `;`"));
        assert!(help(Some("natives")).unwrap().contains("wall_clock_ms"));
        assert!(help(Some("nope")).is_err());
    }

    #[test]
    fn text_wraps_at_spaces() {
        assert_eq!(wrap("aa bb cc", 7, "  "), "  aa bb\n  cc");
    }
}
