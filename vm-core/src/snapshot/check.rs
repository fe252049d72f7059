//! The state verifier: everything the runtime relies on when it restores a snapshot, checked
//! against the snapshot's (verified) module. See the parent module's docs, "Loading", step 4.

use super::v1::{self, Boxed, VRef, Wait};
use super::{Snapshot, SnapshotError};
use crate::module::{Function, Module};
use crate::ops::Instr;
use crate::value::Value;
use std::collections::{HashMap, HashSet};

/// How many nodes map and table keys may add up to when expanded into trees, beyond a
/// multiple of the file's size. Shared values make a DAG, and comparing or hashing a key walks
/// it as a tree: without a bound a small hostile file could make restoring its maps take
/// exponential time.
const KEY_WORK: u64 = 1 << 26;

/// Checks a snapshot's state against its module, as [`super::decode`] does after loading it.
/// The runtime calls it before writing a file, so a file it writes is one it will load.
pub fn check(s: &Snapshot) -> Result<(), SnapshotError> {
    check_loaded(s, 0)
}

/// [`check`] for a snapshot read from a file of `file_len` bytes (which scales the key work
/// it accepts: what a file spells out in full is not a DAG's blow-up).
pub(super) fn check_loaded(s: &Snapshot, file_len: usize) -> Result<(), SnapshotError> {
    let mut c = Checker {
        s,
        m: &s.module,
        member_of: HashMap::new(),
        chans: HashSet::new(),
        res: HashSet::new(),
        size: Vec::with_capacity(s.values.shared.len()),
        data: Vec::with_capacity(s.values.shared.len()),
        key_work: KEY_WORK.saturating_add(16u64.saturating_mul(file_len as u64)),
    };
    c.run().map_err(SnapshotError::State)
}

struct Checker<'a> {
    s: &'a Snapshot,
    m: &'a Module,
    /// The container (an index of `s.containers`) of each actor listed in one.
    member_of: HashMap<u64, usize>,
    chans: HashSet<u64>,
    res: HashSet<u64>,
    /// Per shared entry: its node count as a tree (saturating).
    size: Vec<u64>,
    /// Per shared entry: whether it is plain data (no pid, channel, resource or function).
    data: Vec<bool>,
    /// What is left of the key-work budget.
    key_work: u64,
}

type Res = Result<(), String>;

impl<'a> Checker<'a> {
    fn run(&mut self) -> Res {
        self.meta()?;
        self.handles()?;
        self.values()?;
        self.members()?;
        let mut pids = HashSet::new();
        // Each container has its own registry: a name is unique within one.
        let mut names = HashSet::new();
        for a in &self.s.actors {
            let who = format!("actor <{}>", a.pid);
            if !pids.insert(a.pid) {
                return Err(format!("{who} appears twice"));
            }
            self.actor(a, &mut names).map_err(|e| format!("{who}: {e}"))?;
        }
        self.containers(&pids)?;
        if let Some(main) = self.s.meta.main
            && !pids.contains(&main)
        {
            return Err(format!("the main actor <{main}> is not among the actors"));
        }
        let mut limited = HashSet::new();
        for l in &self.s.limits {
            if !pids.contains(&l.pid) || !limited.insert(l.pid) {
                return Err(format!("the limits section names actor <{}> twice or not at all", l.pid));
            }
            if l.max_heap == Some(0) {
                return Err(format!("actor <{}>: its heap limit is 0", l.pid));
            }
        }
        let mut seeded = HashSet::new();
        for g in &self.s.rngs {
            if !pids.contains(&g.pid) || !seeded.insert(g.pid) {
                return Err(format!("the rng section names actor <{}> twice or not at all", g.pid));
            }
        }
        for ch in &self.s.channels {
            self.channel(ch).map_err(|e| format!("channel {}: {e}", ch.id))?;
        }
        for t in &self.s.tables {
            self.table(t).map_err(|e| format!("table {}: {e}", t.id))?;
        }
        for r in &self.s.resources {
            self.resource(r).map_err(|e| format!("resource {}: {e}", r.id))?;
        }
        Ok(())
    }

    fn meta(&self) -> Res {
        let meta = &self.s.meta;
        if meta.config.fuel == 0 {
            return Err("the fuel per slice is 0".into());
        }
        if meta.config.max_frames == 0 {
            return Err("the default frame limit is 0".into());
        }
        Ok(())
    }

    /// Collects the ids of channels, tables and resources: unique and below their counters.
    fn handles(&mut self) -> Res {
        let counters = self.s.meta.counters;
        for ch in &self.s.channels {
            if ch.id >= counters.next_chan {
                return Err(format!(
                    "channel id {} is not below the next channel id {}",
                    ch.id, counters.next_chan
                ));
            }
            if !self.chans.insert(ch.id) {
                return Err(format!("channel {} appears twice", ch.id));
            }
        }
        let ids = self.s.tables.iter().map(|t| t.id).chain(self.s.resources.iter().map(|r| r.id));
        for id in ids {
            if id >= counters.next_handle {
                return Err(format!(
                    "handle id {id} is not below the next handle id {}",
                    counters.next_handle
                ));
            }
            if !self.res.insert(id) {
                return Err(format!("handle id {id} names two tables or resources"));
            }
        }
        Ok(())
    }

    /// Checks a reference found inside shared entry `within` (or outside the values section,
    /// with `within` = the number of entries): it may refer only to earlier entries.
    fn vref(&self, r: VRef, within: usize) -> Res {
        match r {
            VRef::Nil | VRef::False | VRef::True | VRef::Int(_) | VRef::Float(_) => Ok(()),
            VRef::Atom(i) => self.atom(i),
            VRef::Pid(p) => self.pid(p),
            VRef::Ref(r) => self.reference(r),
            VRef::Chan(id) if self.chans.contains(&id) => Ok(()),
            VRef::Chan(id) => Err(format!("refers to channel {id}, which the snapshot does not hold")),
            VRef::Res(id) if self.res.contains(&id) => Ok(()),
            VRef::Res(id) => Err(format!("refers to handle {id}, which the snapshot does not hold")),
            VRef::Shared(i) if (i as usize) < within => Ok(()),
            VRef::Shared(i) if (i as usize) < self.s.values.shared.len() => {
                Err(format!("refers to shared value {i}, which does not come before it"))
            }
            VRef::Shared(i) => {
                Err(format!("refers to shared value {i}, but there are only {}", self.s.values.shared.len()))
            }
        }
    }

    fn atom(&self, i: u32) -> Res {
        if (i as usize) < self.s.values.atoms.len() {
            Ok(())
        } else {
            Err(format!("refers to atom {i}, but there are only {}", self.s.values.atoms.len()))
        }
    }

    fn pid(&self, p: u64) -> Res {
        let next = self.s.meta.counters.next_pid;
        if p == 0 || p >= next {
            return Err(format!("refers to pid <{p}>, which was never handed out (the next pid is {next})"));
        }
        Ok(())
    }

    /// A reference this VM made (node 0) is below the reference counter, so a resumed VM never
    /// hands it out again; one another node made cannot be in a snapshot (a clustered VM is not
    /// snapshotted), as for pids.
    fn reference(&self, r: u64) -> Res {
        let next = self.s.meta.counters.next_ref;
        if r == 0 || r >= next {
            return Err(format!("refers to reference {r}, which was never handed out (the next is {next})"));
        }
        Ok(())
    }

    fn values(&mut self) -> Res {
        let all = self.s.values.shared.len();
        for (i, entry) in self.s.values.shared.iter().enumerate() {
            let mut size = 1u64;
            let mut data = true;
            let at = |e: String| format!("shared value {i}: {e}");
            let mut child = |c: &Checker<'_>, r: VRef| -> Res {
                c.vref(r, i).map_err(at)?;
                let (n, pure) = c.shape(r);
                size = size.saturating_add(n);
                data &= pure;
                Ok(())
            };
            match entry {
                Boxed::Str(_) | Boxed::Bytes(_) => {}
                Boxed::Tuple(items) | Boxed::List(items) => {
                    for &r in items {
                        child(self, r)?;
                    }
                }
                Boxed::Map(pairs) => {
                    for &(k, v) in pairs {
                        child(self, k)?;
                        child(self, v)?;
                    }
                    for &(k, _) in pairs {
                        self.charge_key(k).map_err(at)?;
                    }
                }
                Boxed::Fun { func, env } => {
                    self.fun_target(*func, env.len()).map_err(at)?;
                    for &r in env {
                        child(self, r)?;
                    }
                    data = false;
                }
            }
            self.size.push(size);
            self.data.push(data);
        }
        debug_assert_eq!(self.size.len(), all);
        Ok(())
    }

    /// Tree size and plain-data flag of a (checked) reference.
    fn shape(&self, r: VRef) -> (u64, bool) {
        match r {
            VRef::Shared(i) => {
                let i = i as usize;
                (self.size[i], self.data[i])
            }
            VRef::Pid(_) | VRef::Chan(_) | VRef::Res(_) => (1, false),
            _ => (1, true),
        }
    }

    fn charge_key(&mut self, k: VRef) -> Res {
        let (n, _) = self.shape(k);
        self.key_work = self.key_work.checked_sub(n).ok_or_else(|| {
            "its map or table keys expand to more nodes than the file could hold: shared \
             values reused as keys beyond any real program's"
                .to_string()
        })?;
        Ok(())
    }

    fn func(m: &Module, f: u32) -> Result<&Function, String> {
        m.funcs
            .get(f as usize)
            .ok_or_else(|| format!("refers to function {f}, but the module has {}", m.funcs.len()))
    }

    /// The module actor `pid` runs: its container's, or the module section's.
    fn module_of(&self, pid: u64) -> &'a Module {
        match self.member_of.get(&pid) {
            Some(&i) => &self.s.containers[i].module,
            None => self.m,
        }
    }

    /// The function a function value names. Values are shared by every container, and a
    /// function value never leaves its container (the runtime refuses it at every boundary, and
    /// `callv` checks its function against the caller's module), so it must fit the function
    /// of that index in one of the snapshot's modules.
    fn fun_target(&self, func: u32, captured: usize) -> Result<&'a Function, String> {
        let fits = |m: &'a Module| Self::func(m, func).ok().filter(|f| captured <= f.arity as usize);
        if let Some(f) =
            std::iter::once(self.m).chain(self.s.containers.iter().map(|c| &*c.module)).find_map(fits)
        {
            return Ok(f);
        }
        let f = Self::func(self.m, func)?;
        Err(format!(
            "a function value of `{}` captures {captured} values but the function takes {}",
            f.name, f.arity
        ))
    }

    /// Each actor a container lists belongs to that container only.
    fn members(&mut self) -> Res {
        for (i, c) in self.s.containers.iter().enumerate() {
            for m in &c.spec.actors {
                if self.member_of.insert(m.pid, i).is_some() {
                    return Err(format!(
                        "actor <{}> is listed twice in the containers section (an actor belongs to one container)",
                        m.pid
                    ));
                }
            }
        }
        Ok(())
    }

    /// The containers section: names, roots, members, published values, shared channels.
    fn containers(&self, pids: &HashSet<u64>) -> Res {
        let mut names = HashSet::new();
        for c in &self.s.containers {
            let c = &c.spec;
            let at = |e: String| format!("container {:?}: {e}", c.name);
            if c.name.is_empty() || c.name.contains('/') || c.name == "main" {
                return Err(at("is not a container name (non-empty, no '/', not \"main\")".into()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(at("appears twice".into()));
            }
            if c.root != 0 {
                self.pid(c.root).map_err(|e| at(format!("its root {e}")))?;
            }
            for m in &c.actors {
                if !pids.contains(&m.pid) {
                    return Err(at(format!("lists actor <{}>, which is not among the actors", m.pid)));
                }
            }
            let l = c.limits;
            if l.max_actors == Some(0) || l.max_mailbox == Some(0) || l.max_heap == Some(0) {
                return Err(at("a limit is 0".into()));
            }
            for (name, v) in &c.published {
                self.top_ref(*v).map_err(|e| at(format!("its published {name:?} {e}")))?;
            }
        }
        for &id in &self.s.shared_channels {
            if !self.chans.contains(&id) {
                return Err(format!("shared channel {id} is not among the channels"));
            }
        }
        Ok(())
    }

    fn top_ref(&self, r: VRef) -> Res {
        self.vref(r, self.s.values.shared.len())
    }

    fn exception(&self, e: &v1::Exception) -> Res {
        self.atom(e.kind)?;
        self.top_ref(e.msg)
    }

    fn actor(&self, a: &v1::Actor, names: &mut HashSet<(Option<usize>, u32)>) -> Res {
        self.pid(a.pid)?;
        let m = self.module_of(a.pid);
        self.state(m, &a.state)?;
        self.wait(m, a)?;
        for (i, &r) in a.mailbox.iter().enumerate() {
            self.top_ref(r).map_err(|e| format!("message {i}: {e}"))?;
        }
        for (i, sig) in a.signals.iter().enumerate() {
            let at = |e: String| format!("signal {i}: {e}");
            match *sig {
                v1::Signal::Exit { from, reason } => {
                    self.pid(from).map_err(at)?;
                    self.top_ref(reason).map_err(at)?;
                }
                v1::Signal::Kill { reason } => self.top_ref(reason).map_err(at)?,
                v1::Signal::Interrupt { exc, mode } => {
                    self.exception(&exc).map_err(at)?;
                    if mode > 2 {
                        return Err(at(format!("interrupt mode {mode} (modes are 0, 1 and 2)")));
                    }
                }
            }
        }
        if let Some(name) = a.name {
            self.atom(name).map_err(|e| format!("its name {e}"))?;
            if !names.insert((self.member_of.get(&a.pid).copied(), name)) {
                let name = &self.s.values.atoms[name as usize];
                return Err(format!("its name :{name} is registered to another actor too"));
            }
        }
        for &p in &a.links {
            self.pid(p).map_err(|e| format!("a link {e}"))?;
        }
        let next_ref = self.s.meta.counters.next_ref;
        for &(r, p) in a.monitors.iter().chain(&a.monitoring) {
            self.pid(p).map_err(|e| format!("a monitor {e}"))?;
            if r == 0 || r >= next_ref {
                return Err(format!("monitor reference {r} was never handed out (the next is {next_ref})"));
            }
        }
        if a.max_mailbox == Some(0) {
            return Err("its mailbox limit is 0".into());
        }
        Ok(())
    }

    /// The interpreter's invariants (see `ActorState` and `interp`).
    fn state(&self, m: &Module, st: &v1::State) -> Res {
        if st.frames.is_empty() {
            return Err("it has no frames (an actor that has ended is not restored)".into());
        }
        if st.max_frames == 0 {
            return Err("its frame limit is 0".into());
        }
        let mut base = 0u64;
        for (i, fr) in st.frames.iter().enumerate() {
            let at = |e: String| format!("frame {i}: {e}");
            let f = Self::func(m, fr.func).map_err(at)?;
            if fr.pc as usize >= f.code.len() {
                return Err(at(format!(
                    "pc {} is past the end of `{}` ({} instructions)",
                    fr.pc,
                    f.name,
                    f.code.len()
                )));
            }
            if u64::from(fr.base) != base {
                return Err(at(format!(
                    "its registers start at {} but the frame below ends at {base}",
                    fr.base
                )));
            }
            base += u64::from(f.nregs);
            if let Some(callee) = st.frames.get(i + 1) {
                // A frame below the top waits in a call for its callee to return.
                let dst = match f.code[fr.pc as usize] {
                    Instr::Call { dst, .. } | Instr::Callv { dst, .. } => dst,
                    other => {
                        return Err(at(format!(
                            "a frame with a callee must be at a call, but `{}` pc {} is `{}`",
                            f.name,
                            fr.pc,
                            other.opcode().mnemonic()
                        )));
                    }
                };
                if callee.ret != dst {
                    return Err(format!(
                        "frame {}: returns into r{} but its caller's call writes r{dst}",
                        i + 1,
                        callee.ret
                    ));
                }
            }
        }
        if base > st.regs.len() as u64 {
            return Err(format!("its frames need {base} registers but it has {}", st.regs.len()));
        }
        // Every slot above the running frame is nil (`ActorState`'s invariant: a call writes
        // only its arguments into the callee's window).
        if let Some(i) = st.regs[base as usize..].iter().position(|r| *r != VRef::Nil) {
            return Err(format!(
                "register {} above the running frame (which ends at {base}) is not nil",
                base as usize + i
            ));
        }
        for (i, &r) in st.regs.iter().enumerate() {
            self.top_ref(r).map_err(|e| format!("register {i}: {e}"))?;
        }
        let mut last = 0;
        for (i, h) in st.handlers.iter().enumerate() {
            let at = |e: String| format!("handler {i}: {e}");
            let Some(fr) = st.frames.get(h.frame as usize) else {
                return Err(at(format!("belongs to frame {} of {}", h.frame, st.frames.len())));
            };
            if h.frame < last {
                return Err(at("is out of order (handlers go innermost last)".into()));
            }
            last = h.frame;
            let f = Self::func(m, fr.func).map_err(at)?;
            if h.target as usize >= f.code.len() || h.dst >= f.nregs {
                return Err(at(format!(
                    "continues at {} into r{}, outside `{}` ({} instructions, {} registers)",
                    h.target,
                    h.dst,
                    f.name,
                    f.code.len(),
                    f.nregs
                )));
            }
        }
        if let Some(e) = &st.pending {
            self.exception(e).map_err(|e| format!("its pending exception {e}"))?;
        }
        if let Some(c) = &st.caught
            && let Some((e, func, pc)) = &c.last
        {
            self.exception(e).map_err(|e| format!("its last caught exception {e}"))?;
            let f = Self::func(m, *func).map_err(|e| format!("its last caught exception {e}"))?;
            if *pc as usize >= f.code.len() {
                return Err(format!(
                    "its last caught exception was raised at pc {pc}, past the end of `{}`",
                    f.name
                ));
            }
        }
        Ok(())
    }

    /// The blocked instruction must be one that waits as recorded.
    fn wait(&self, m: &Module, a: &v1::Actor) -> Res {
        let Some(top) = a.state.frames.last() else { return Ok(()) };
        let f = &m.funcs[top.func as usize];
        let instr = f.code[top.pc as usize];
        match a.wait {
            Wait::Runnable => Ok(()),
            Wait::Timed { .. } => match instr {
                Instr::Sleep { .. } | Instr::Recvt { .. } | Instr::Recvpt { .. } | Instr::Select { .. } => {
                    Ok(())
                }
                other => Err(format!(
                    "it waits with a deadline at `{}` pc {}, which is `{}` (no instruction with a deadline)",
                    f.name,
                    top.pc,
                    other.opcode().mnemonic()
                )),
            },
            Wait::Native { name } => {
                self.atom(name).map_err(|e| format!("its native call {e}"))?;
                let want = &self.s.values.atoms[name as usize];
                match instr {
                    Instr::Native { name: k, .. } => match m.consts.get(k as usize) {
                        Some(Value::Atom(n)) if *n.name() == **want => Ok(()),
                        _ => Err(format!(
                            "it waits in native `{want}` but `{}` pc {} calls another",
                            f.name, top.pc
                        )),
                    },
                    other => Err(format!(
                        "it waits in native `{want}` but `{}` pc {} is `{}`",
                        f.name,
                        top.pc,
                        other.opcode().mnemonic()
                    )),
                }
            }
        }
    }

    fn channel(&self, ch: &v1::Channel) -> Res {
        if ch.buffer.len() as u64 > ch.cap {
            return Err(format!("{} buffered values exceed its capacity {}", ch.buffer.len(), ch.cap));
        }
        for (i, &r) in ch.buffer.iter().enumerate() {
            self.top_ref(r).map_err(|e| format!("buffered value {i}: {e}"))?;
        }
        Ok(())
    }

    fn table(&mut self, t: &v1::Table) -> Res {
        for (i, &(k, v)) in t.entries.iter().enumerate() {
            let at = |e: String| format!("entry {i}: {e}");
            self.top_ref(k).map_err(at)?;
            self.top_ref(v).map_err(at)?;
            if !self.shape(k).1 || !self.shape(v).1 {
                return Err(at("holds a pid, channel, resource or function (tables hold plain data)".into()));
            }
            self.charge_key(k).map_err(at)?;
        }
        Ok(())
    }

    fn resource(&self, r: &v1::Resource) -> Res {
        // Owner 0: a handle nobody owns (one that is lost after a restore anyway).
        if r.owner != 0 {
            self.pid(r.owner).map_err(|e| format!("its owner {e}"))?;
        }
        if let v1::Recipe::File { read, write, append, .. } = r.recipe
            && !(read || write || append)
        {
            return Err("a file opened for neither reading nor writing".into());
        }
        Ok(())
    }
}
