//! [`ActorHost`]: the [`Host`] the interpreter sees while it steps one actor, that is every
//! service that completes without waiting (spawn, send, receive's fast path, channels' fast
//! path, natives that need not wait, links, monitors, the registry, signals).

use crate::cell::{ActorCell, RunState};
use crate::chan::waits;
use crate::cluster;
use crate::mailbox::{Signal, TakeOrPark};
use crate::trace;
use crate::vm::Vm;
use std::sync::Arc;
use vm_core::{
    ActorOp, Atom, ChanArg, ChanTried, Closure, Exception, Fired, Handle, Host, NativeCall, Pid, Received,
    SelectCase, SpawnOpts, Value, atoms,
};
use vm_io::natives;

/// The interpreter's view of the runtime, for one actor.
pub(crate) struct ActorHost<'a> {
    pub(crate) vm: &'a Vm,
    pub(crate) cell: &'a Arc<ActorCell>,
    /// The actor this one sent to last. Actors mostly talk to the same peer, and this saves the
    /// registry lookup; a cached actor that has exited just drops the message, as the registry
    /// would.
    pub(crate) last_target: Option<Arc<ActorCell>>,
    /// The wait the step began and holds, if any ([`waits::Held`]): an I/O operation `native`
    /// began ([`NativeCall::Begun`]), a send held for a node far behind, or a `csend`/`crecv`
    /// parked on its channel. The step blocks right after with `Effect::Begun`, and the driver
    /// takes it at once; an actor that ends holding one cancels it (`Drop`).
    pub(crate) held: waits::Held,
}

/// An actor that ends with a channel wait still held (its task dropped between the step and
/// the driver's taking it) cancels it, so that no counterpart commits to an actor that is gone.
impl Drop for ActorHost<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.held.take_chan_wait(self.vm, self.cell) {
            drop(w);
        }
    }
}

impl ActorHost<'_> {
    /// What a send to another node did, as `Host::send` answers: a held send is kept in
    /// `held` and reported as an error that `send_waits` explains (`cluster`'s rule 3).
    /// Nothing else is in flight at a send (a begun native ends the step at once, and the
    /// driver takes it), so `held` holding I/O after a failed send means "held".
    fn remote_sent(&mut self, remote: cluster::Remote) -> Result<(), Exception> {
        match remote {
            cluster::Remote::Sent => {
                self.held = waits::Held::Nothing;
                Ok(())
            }
            cluster::Remote::Refused(e) => {
                self.held = waits::Held::Nothing;
                Err(e)
            }
            cluster::Remote::Wait(fut) => {
                self.held = waits::Held::Io(fut);
                Err(Exception::new(atoms::LIMIT, "the receiver's node is far behind"))
            }
        }
    }
}

impl ActorHost<'_> {
    /// What the mailbox did, as the stepper's [`Received`] (waking the deadlock detector if
    /// parking made the VM idle); `None` if the scan stopped at its budget.
    #[inline(always)]
    fn received(&self, took: TakeOrPark) -> Option<Received> {
        Some(match took {
            TakeOrPark::Taken(m) => Received::Message(m),
            TakeOrPark::Parked { idle } => {
                if idle {
                    self.vm.shared.idle.notify_one();
                }
                Received::Parked
            }
            TakeOrPark::Empty => Received::Empty,
            TakeOrPark::Unfinished => return None,
        })
    }
}

impl Host for ActorHost<'_> {
    fn self_pid(&self) -> Pid {
        self.cell.pid
    }

    fn spawn(
        &mut self,
        fun: Arc<Closure>,
        args: Vec<Value>,
        opts: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        let module = self.cell.module.clone();
        let container = &self.cell.container;
        let (pid, r) =
            self.vm.spawn_in(container, module, &fun, args, opts, Some(self.cell.pid), Default::default())?;
        trace::trace_spawned(self.cell.pid, pid);
        if let Some(r) = r {
            self.cell.mailbox.with(|i| i.ext().monitoring.push((r, pid)));
        }
        Ok((pid, r))
    }

    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
        let me = self.cell.pid;
        trace::trace_send(me, to, &msg);
        let io = &self.vm.shared.io;
        // Resources in the message become the receiver's before it can see them (and only when
        // there is a receiver: a message to an exited actor is dropped, closing them).
        if to == me {
            self.vm.deliver(self.cell, msg);
            return Ok(());
        }
        match &self.last_target {
            Some(c) if c.pid == to && c.state() != RunState::Exited => {
                io.transfer(&msg, me.0, to.0);
                self.vm.deliver(c, msg);
            }
            _ => {
                if let Some(c) = self.vm.lookup(to) {
                    // Across containers the message is checked (and the receiver not cached, so
                    // the fast path above only ever meets the sender's own container).
                    if !Arc::ptr_eq(&c.container, &self.cell.container) {
                        Vm::check_crossing(self.cell, &c, &msg)?;
                        io.transfer(&msg, me.0, to.0);
                        self.vm.deliver(&c, msg);
                        return Ok(());
                    }
                    io.transfer(&msg, me.0, to.0);
                    self.vm.deliver(&c, msg);
                    self.last_target = Some(c);
                } else if !to.is_local() {
                    let remote = cluster::send(self.vm, me, to, msg);
                    return self.remote_sent(remote);
                }
            }
        }
        Ok(())
    }

    fn send_waits(&mut self) -> bool {
        matches!(self.held, waits::Held::Io(_))
    }

    fn send_to_node(&mut self, name: Atom, node: Atom, msg: Value) -> Result<(), Exception> {
        let remote = cluster::send_named(self.vm, self.cell.pid, name, node, msg)?;
        self.remote_sent(remote)
    }

    fn progress(&mut self, func: u32, pc: u32) {
        self.vm.shared.heartbeat.progress(func, pc);
    }

    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        self.cell.mailbox.try_take(pattern)
    }

    fn try_receive_or_park(&mut self, pattern: Option<&Value>) -> Received {
        let took = self.cell.mailbox.take_or_park(pattern, &self.vm.shared.active);
        // With no bound on the scan, it always finishes.
        self.received(took).unwrap_or(Received::Empty)
    }

    fn try_receive_matching(&mut self, pattern: &Value, park: bool, budget: &mut u32) -> Option<Received> {
        if park {
            let took = self.cell.mailbox.take_or_park_within(Some(pattern), budget, &self.vm.shared.active);
            return self.received(took);
        }
        match self.cell.mailbox.try_take_within(Some(pattern), budget) {
            Ok(Some(m)) => Some(Received::Message(m)),
            Ok(None) => Some(Received::Empty),
            Err(_) => None,
        }
    }

    fn now_ms(&self) -> i64 {
        self.vm.now_ms()
    }

    fn native(&mut self, name: Atom, args: &[Value]) -> NativeCall {
        let Some((id, native)) = natives::find(name) else { return NativeCall::unknown(name) };
        let ctx = natives::Ctx {
            io: &self.vm.shared.io,
            pid: self.cell.pid.0,
            grants: &self.cell.container.grants,
            console: &self.cell.container.console,
        };
        match native.imp {
            // Left to the driver, which runs it on the blocking pool or queues it to its
            // executor's thread.
            natives::Imp::Blocking(_) | natives::Imp::Affine(..) => NativeCall::Deferred(id),
            // The common case, kept short: the arity check and the function pointer come from
            // the row just matched (`Native::call` would match the kind again), and a panic
            // still becomes a quiet `:panic` exception in this actor only (`natives::guarded`).
            natives::Imp::Inline(f) => NativeCall::Done(natives::guarded(|| native.call_sync(f, &ctx, args))),
            // Its start runs here too, guarded the same way; its future's polls are guarded
            // by the driver (`native::IoWait`).
            natives::Imp::Async(_) => match natives::guarded_start(|| native.start(&ctx, args)) {
                natives::Started::Done(r) => NativeCall::Done(r),
                natives::Started::Pending(fut) => {
                    self.held = waits::Held::Io(fut);
                    NativeCall::Begun(id)
                }
            },
        }
    }

    fn memory(&mut self, usage: vm_core::mem::MemUse) -> Result<Option<u64>, Value> {
        match self.vm.check_memory(self.cell, usage) {
            (crate::budget::Verdict::Go, max_heap) => Ok(max_heap),
            (crate::budget::Verdict::Stop(reason), _) => Err(reason),
        }
    }

    fn chan_new(&mut self, cap: usize) -> Result<Value, Exception> {
        Ok(waits::new_channel(self.vm, cap))
    }

    // The boundary check of every send (`container`, rule 4) is in `waits`, next to the
    // channel operations whose lock it must agree with (rule 4.5).
    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        waits::try_now(self.vm, self.cell, cases)
    }

    fn chan_try_within(
        &mut self,
        cases: &[SelectCase],
        budget: &mut u32,
    ) -> Option<Result<Option<Fired>, Exception>> {
        waits::try_now_within(self.vm, self.cell, cases, budget)
    }

    fn chan_try_one(&mut self, chan: &Handle, send: Option<&Value>) -> Result<Option<Fired>, Exception> {
        waits::try_one(self.vm, "csend", chan, send)
    }

    // Inlined into each of `csend`'s and `crecv`'s copies, so that each is specialised to its
    // direction (docs/BENCHMARKS.md, "chan5").
    #[inline(always)]
    fn chan_try_or_park(&mut self, chan: &Handle, arg: ChanArg<'_>) -> ChanTried {
        waits::try_or_park(self.vm, self.cell, chan, arg, &mut self.held)
    }

    fn chan_close(&mut self, h: &Handle) -> Result<(), Exception> {
        waits::close(self.vm, h)
    }

    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        trace::trace_control(self.cell, &op, |name| self.vm.whereis_in(&self.cell.container, name).is_none());
        let me = self.cell.pid;
        let vm = self.vm;
        if cluster::is_remote(&op) {
            return cluster::control(vm, self.cell, op);
        }
        match op {
            // Names are the caller's container's own (`container`, rule 5).
            ActorOp::Register(name, pid) => {
                vm.register_in(&self.cell.container, name, pid).map(|()| Value::Nil)
            }
            ActorOp::Unregister(name) => {
                vm.unregister_in(&self.cell.container, name);
                Ok(Value::Nil)
            }
            ActorOp::Whereis(name) => {
                Ok(vm.whereis_in(&self.cell.container, name).map_or(Value::Nil, Value::Pid))
            }
            ActorOp::Link(pid) if pid == me => Ok(Value::Nil),
            ActorOp::Link(pid) => {
                let alive = vm.lookup(pid).is_some_and(|c| {
                    c.mailbox.with(|i| {
                        if !i.closed && !i.ext().links.contains(&me) {
                            i.ext().links.push(me);
                        }
                        !i.closed
                    })
                });
                if alive {
                    self.cell.mailbox.with(|i| {
                        if !i.ext().links.contains(&pid) {
                            i.ext().links.push(pid);
                        }
                    });
                } else {
                    vm.signal_cell(self.cell, Signal::Exit { from: pid, reason: Value::Atom(atoms::NOPROC) });
                }
                Ok(Value::Nil)
            }
            ActorOp::Unlink(pid) => {
                self.cell.mailbox.with(|i| i.ext().links.retain(|p| *p != pid));
                if let Some(c) = vm.lookup(pid) {
                    c.mailbox.with(|i| i.ext().links.retain(|p| *p != me));
                }
                Ok(Value::Nil)
            }
            // Monitors and references share the counter (a snapshot keeps it), so every
            // reference this VM makes is new; 2^48 of them exhaust no run.
            ActorOp::MakeRef => Ok(Value::Ref(vm_core::value::Ref(
                vm.next_ref() as u64 & ((1 << vm_core::value::Ref::SERIAL_BITS) - 1),
            ))),
            ActorOp::Monitor(pid) => {
                let r = vm.next_ref();
                let alive = vm.lookup(pid).is_some_and(|c| {
                    c.mailbox.with(|i| {
                        if !i.closed {
                            i.ext().monitors.push((r, me));
                        }
                        !i.closed
                    })
                });
                if alive {
                    self.cell.mailbox.with(|i| i.ext().monitoring.push((r, pid)));
                } else {
                    let down = Value::tuple(vec![
                        Value::Atom(atoms::DOWN),
                        Value::Int(r),
                        Value::Pid(pid),
                        Value::Atom(atoms::NOPROC),
                    ]);
                    vm.deliver(self.cell, down);
                }
                Ok(Value::Int(r))
            }
            ActorOp::Demonitor(r) => {
                let held = self.cell.mailbox.with(|i| {
                    let m = &mut i.ext().monitoring;
                    m.iter().position(|(x, _)| *x == r).map(|k| m.swap_remove(k).1)
                });
                if let Some(pid) = held {
                    if !pid.is_local() {
                        cluster::demonitor(vm, me, pid, r);
                    } else if let Some(c) = vm.lookup(pid) {
                        c.mailbox.with(|i| i.ext().monitors.retain(|(x, _)| *x != r));
                    }
                }
                Ok(Value::Nil)
            }
            ActorOp::TrapExit(on) => {
                Ok(Value::Bool(self.cell.mailbox.with(|i| std::mem::replace(&mut i.ext().trap_exit, on))))
            }
            ActorOp::Exit(pid, reason) => {
                let sig = match &reason {
                    Value::Atom(a) if *a == atoms::KILL => Signal::Kill(Value::Atom(atoms::KILLED)),
                    _ => Signal::Exit { from: me, reason },
                };
                vm.signal(pid, sig);
                Ok(Value::Nil)
            }
            ActorOp::Kill(pid) => {
                vm.signal(pid, Signal::Kill(Value::Atom(atoms::KILLED)));
                Ok(Value::Nil)
            }
            ActorOp::Interrupt(pid, exc, mode) => {
                vm.signal(pid, Signal::Interrupt { exc, mode });
                Ok(Value::Nil)
            }
        }
    }
}
