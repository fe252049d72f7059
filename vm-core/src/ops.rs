//! The op list: the one place instructions are defined.
//!
//! [`for_each_op!`](crate::for_each_op) lists every instruction once: its group, enum variant, mnemonic, named
//! operands with their kinds, its columns, and its documentation. Everything else derives from
//! that list by expanding the macro: the [`Instr`] enum the interpreter matches on, the [`Opcode`]
//! byte used by the binary format, the mnemonic table used by the assembler and disassembler, the
//! operand kinds the verifier checks, the terminators the verifier and assembler check for, the
//! fuel the interpreter charges for a spawn, and `docs/isa.md` (rendered by [`isa_markdown`] and
//! checked by a test).
//!
//! Columns (in brackets after the operands; an op with none has no brackets):
//! - `term`: a terminator, after which execution never continues with the next instruction
//!   ([`Opcode::is_terminator`]). Every function ends with one; the verifier checks it.
//! - `blocks`: the instruction may suspend the actor: the stepper can return
//!   [`Step::Blocked`](crate::step::Step::Blocked) with the program counter on it
//!   ([`Opcode::may_block`]). An op without it never blocks.
//! - `fuel_call`, `fuel_jump`, `fuel_spawn`: what the instruction charges against the actor's
//!   fuel ([`Opcode::fuel`], [`Fuel`]); an op with none of them is free. At most one per op.
//!
//! A test in `interp` runs every op on every combination of a palette of operand values and
//! checks each column against what the stepper does.
//!
//! Operand kinds ([`OperandKind`]):
//! - `Dst`: a register the instruction writes. A blocking instruction's result is written there
//!   when the runtime resumes it.
//! - `Reg`: a register the instruction reads.
//! - `Count`: a number of registers; it always follows a `Reg` operand and the two name the
//!   register window `reg .. reg+count` (arguments of a call, items of a tuple).
//! - `Const`: an index into the module's constant pool (written as a literal in assembly).
//! - `Label`: an instruction index in the same function (written as a label name).
//! - `Func`: a function index in the module (written as the function's name).
//! - `Imm`: a signed 32-bit immediate integer.

use serde::{Deserialize, Serialize};

/// A register index within the current frame.
pub type Reg = u16;

/// The kind of an operand; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandKind {
    /// A register written by the instruction.
    Dst,
    /// A register read by the instruction.
    Reg,
    /// The length of the register window starting at the previous `Reg` operand.
    Count,
    /// A constant-pool index.
    Const,
    /// An instruction index in the same function.
    Label,
    /// A function index.
    Func,
    /// A signed 32-bit immediate.
    Imm,
}

impl OperandKind {
    /// The inclusive range of values an operand of this kind can hold in the binary format.
    pub fn range(self) -> (i64, i64) {
        match self {
            OperandKind::Dst | OperandKind::Reg | OperandKind::Count => (0, u16::MAX as i64),
            OperandKind::Const | OperandKind::Label | OperandKind::Func => (0, u32::MAX as i64),
            OperandKind::Imm => (i32::MIN as i64, i32::MAX as i64),
        }
    }

    /// How many bytes an operand of this kind takes in the binary format (little endian).
    pub fn width(self) -> usize {
        match self {
            OperandKind::Dst | OperandKind::Reg | OperandKind::Count => 2,
            _ => 4,
        }
    }
}

/// What an instruction charges against the actor's fuel: its `fuel_*` column in the op list.
/// Fuel is charged on calls and backward jumps, never per instruction, so straight-line code is
/// free and every loop pays once per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fuel {
    /// Nothing.
    Free,
    /// One unit per call, charged before the call (with none left the actor yields first and
    /// runs the call when it resumes). Column `fuel_call`.
    Call,
    /// One unit when the instruction jumps to its own index or before. Column `fuel_jump`.
    BackwardJump,
    /// [`SPAWN_FUEL`] units per actor started. Column `fuel_spawn`.
    Spawn,
}

/// Fuel charged for starting an actor ([`Fuel::Spawn`]). Starting one costs far more than an
/// instruction (a task, a registry entry), so it is charged like many calls: a spawning loop's
/// slices stay as short as a computing loop's.
pub const SPAWN_FUEL: u32 = 100;

/// Calls `$m!` with the whole op list. Each entry is
/// `group Variant "mnemonic" (name: Kind, ...) [columns] "documentation";`, the columns (see the
/// module docs) being optional.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            // ---- moves and constants
            moves Nop "nop" () "Does nothing.";
            moves Move "move" (dst: Dst, src: Reg) "`dst = src`.";
            moves Const "const" (dst: Dst, k: Const) "Loads a constant: `const r0, \"hi\"`, `const r1, {:ok, [1, 2.5]}`.";
            moves Int "int" (dst: Dst, imm: Imm) "Loads a small integer.";
            moves Nil "nil" (dst: Dst) "Loads `nil`.";
            moves Typeof "typeof" (dst: Dst, a: Reg) "The type of `a` as an atom: `:nil :bool :int :float :atom :str :bytes :tuple :list :map :pid :ref :chan :resource :fun`.";
            // ---- arithmetic
            arith Add "add" (dst: Dst, a: Reg, b: Reg) "`a + b`. Two ints give an int (overflow raises `:overflow`); an int and a float give a float; anything else raises `:type_error`.";
            arith Sub "sub" (dst: Dst, a: Reg, b: Reg) "`a - b`, typed as `add`.";
            arith Mul "mul" (dst: Dst, a: Reg, b: Reg) "`a * b`, typed as `add`.";
            arith Div "div" (dst: Dst, a: Reg, b: Reg) "`a / b`. Ints divide truncating toward zero; an int divisor of 0 raises `:div_by_zero`; floats follow IEEE 754.";
            arith Rem "rem" (dst: Dst, a: Reg, b: Reg) "Remainder with the sign of `a`; an int divisor of 0 raises `:div_by_zero`.";
            arith Neg "neg" (dst: Dst, a: Reg) "`-a`; negating the smallest int raises `:overflow`.";
            arith Addi "addi" (dst: Dst, a: Reg, imm: Imm) "`a + imm`, typed as `add`.";
            arith Band "band" (dst: Dst, a: Reg, b: Reg) "Bitwise and of two ints.";
            arith Bor "bor" (dst: Dst, a: Reg, b: Reg) "Bitwise or of two ints.";
            arith Bxor "bxor" (dst: Dst, a: Reg, b: Reg) "Bitwise exclusive or of two ints.";
            arith Shl "shl" (dst: Dst, a: Reg, b: Reg) "`a << b` for `0 <= b < 64` (else `:badarg`); bits shifted out are lost.";
            arith Shr "shr" (dst: Dst, a: Reg, b: Reg) "Arithmetic `a >> b` for `0 <= b < 64` (else `:badarg`).";
            arith Tofloat "tofloat" (dst: Dst, a: Reg) "An int or float as a float; a string is parsed (`:badarg` if it is not a number).";
            arith Toint "toint" (dst: Dst, a: Reg) "An int; a float is truncated (`:badarg` if NaN or out of range); a string or bytes value is parsed as a decimal integer (`:badarg` if it is not one).";
            // ---- comparison
            compare Eq "eq" (dst: Dst, a: Reg, b: Reg) "`true` when `a` and `b` are structurally equal (`1` and `1.0` are not).";
            compare Ne "ne" (dst: Dst, a: Reg, b: Reg) "The negation of `eq`.";
            compare Lt "lt" (dst: Dst, a: Reg, b: Reg) "`a < b` in the term order (numbers compare numerically; see the language guide).";
            compare Le "le" (dst: Dst, a: Reg, b: Reg) "`a <= b` in the term order.";
            compare Gt "gt" (dst: Dst, a: Reg, b: Reg) "`a > b` in the term order.";
            compare Ge "ge" (dst: Dst, a: Reg, b: Reg) "`a >= b` in the term order.";
            compare Cmp "cmp" (dst: Dst, a: Reg, b: Reg) "`-1`, `0` or `1` as `a` is less than, equal to or greater than `b` in the term order.";
            // ---- boolean logic
            logic Not "not" (dst: Dst, a: Reg) "`true` if `a` is falsy (`nil` or `false`), else `false`.";
            logic And "and" (dst: Dst, a: Reg, b: Reg) "`true` if both are truthy.";
            logic Or "or" (dst: Dst, a: Reg, b: Reg) "`true` if either is truthy.";
            // ---- jumps and branches
            jump Jmp "jmp" (target: Label) [term fuel_jump] "Jumps to `target`.";
            jump Jt "jt" (a: Reg, target: Label) [fuel_jump] "Jumps if `a` is truthy.";
            jump Jf "jf" (a: Reg, target: Label) [fuel_jump] "Jumps if `a` is falsy.";
            jump Jeq "jeq" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a == b` (as `eq`).";
            jump Jne "jne" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a != b`.";
            jump Jlt "jlt" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a < b` (as `lt`).";
            jump Jle "jle" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a <= b`.";
            jump Jgt "jgt" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a > b`.";
            jump Jge "jge" (a: Reg, b: Reg, target: Label) [fuel_jump] "Jumps if `a >= b`.";
            jump Jeqi "jeqi" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps if `a` is the int `imm`.";
            jump Jnei "jnei" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps unless `a` is the int `imm`.";
            jump Jlti "jlti" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps if `a < imm` (as `lt`).";
            jump Jlei "jlei" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps if `a <= imm`.";
            jump Jgti "jgti" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps if `a > imm`.";
            jump Jgei "jgei" (a: Reg, imm: Imm, target: Label) [fuel_jump] "Jumps if `a >= imm`.";
            // ---- calls and function values
            call Call "call" (dst: Dst, f: Func, args: Reg, n: Count) [fuel_call] "Calls function `f` with the `n` registers from `args` as its arguments; its return value goes to `dst`. The verifier checks `n` against `f`'s arity.";
            call Callv "callv" (dst: Dst, f: Reg, args: Reg, n: Count) [fuel_call] "Calls the function value in `f` (captured values first, then the `n` arguments); a wrong count raises `:badarity`, a non-function `:type_error`.";
            call Tcall "tcall" (f: Func, args: Reg, n: Count) [term fuel_call] "Tail call: replaces the current frame with a call of `f`, so tail recursion runs in constant space.";
            call Tcallv "tcallv" (f: Reg, args: Reg, n: Count) [term fuel_call] "Tail call of a function value.";
            call Ret "ret" (a: Reg) [term] "Returns `a` to the caller (from `main`, ends the actor with that value).";
            call Fun "fun" (dst: Dst, f: Func) "The function value of `f`.";
            call Closure "closure" (dst: Dst, f: Func, env: Reg, n: Count) "A function value of `f` capturing the `n` registers from `env`; they are passed before the call's own arguments.";
            // ---- tuples, lists and maps
            data Tuple "tuple" (dst: Dst, items: Reg, n: Count) "A tuple of the `n` registers from `items`.";
            data List "list" (dst: Dst, items: Reg, n: Count) "A list of the `n` registers from `items`.";
            data Tget "tget" (dst: Dst, t: Reg, i: Imm) "Element `i` (from 0) of a tuple or list; out of range raises `:index`.";
            data Index "index" (dst: Dst, c: Reg, i: Reg) "Element `i` (from 0) of a tuple or list; a negative `i` counts from the end; out of range raises `:index`.";
            data Lset "lset" (dst: Dst, c: Reg, i: Reg, v: Reg) "A copy of tuple or list `c` with element `i` replaced by `v` (in place when `c` is not shared).";
            data Len "len" (dst: Dst, a: Reg) "Length of a tuple, list or map, or of a string or bytes value in bytes.";
            data Append "append" (dst: Dst, l: Reg, v: Reg) "List `l` with `v` added at the end (in place when `l` is not shared).";
            data Map "map" (dst: Dst) "An empty map.";
            data Mput "mput" (dst: Dst, m: Reg, k: Reg, v: Reg) "Map `m` with key `k` set to `v`.";
            data Mget "mget" (dst: Dst, m: Reg, k: Reg) "The value of key `k` in map `m`, or `nil` if absent.";
            data Mhas "mhas" (dst: Dst, m: Reg, k: Reg) "`true` if map `m` has key `k`.";
            data Mdel "mdel" (dst: Dst, m: Reg, k: Reg) "Map `m` without key `k`.";
            data Mkeys "mkeys" (dst: Dst, m: Reg) "The keys of map `m` as a list, in term order.";
            // ---- strings and bytes
            text Concat "concat" (dst: Dst, a: Reg, b: Reg) "Concatenates two strings, two bytes values or two lists.";
            text Slice "slice" (dst: Dst, s: Reg, from: Reg, to: Reg) "The part `from..to` of a string, bytes value or list (byte offsets for strings, which must fall on character boundaries); out of range raises `:index`.";
            text Find "find" (dst: Dst, hay: Reg, needle: Reg) "The byte offset of the first `needle` in `hay` (strings or bytes), or `-1`.";
            text Split "split" (dst: Dst, s: Reg, sep: Reg) "The list of parts of `s` between occurrences of the non-empty `sep`.";
            text Trim "trim" (dst: Dst, s: Reg) "`s` without leading and trailing ASCII whitespace.";
            text Upper "upper" (dst: Dst, s: Reg) "`s` with ASCII letters in upper case.";
            text Lower "lower" (dst: Dst, s: Reg) "`s` with ASCII letters in lower case.";
            text Byte "byte" (dst: Dst, s: Reg, i: Reg) "The byte at offset `i` of a string or bytes value, as an int; out of range raises `:index`.";
            text Tostr "tostr" (dst: Dst, a: Reg) "The print form of `a` as a string (a string is returned as is).";
            text Btos "btos" (dst: Dst, b: Reg) "Decodes bytes as UTF-8; invalid UTF-8 raises `:badarg`.";
            text Stob "stob" (dst: Dst, s: Reg) "The UTF-8 bytes of a string.";
            // ---- exceptions
            exception Raise "raise" (kind: Reg, msg: Reg) [term] "Raises the exception `{kind, msg}`; `kind` must be an atom.";
            exception Rethrow "rethrow" (e: Reg) [term] "Raises the exception value `e` (as caught by `try`) again.";
            exception Try "try" (dst: Dst, target: Label) "Installs a handler: an exception raised before the matching `endtry`, in this frame or any callee, unwinds to this frame, stores `{kind, msg}` in `dst` and jumps to `target`.";
            exception Endtry "endtry" () "Removes the handler installed by the innermost `try` of this frame.";
            // ---- actors and effects
            actor Print "print" (a: Reg) [blocks] "Writes the print form of `a` and a newline to standard output (an effect).";
            actor Self_ "self" (dst: Dst) "The pid of the running actor.";
            actor Spawn "spawn" (dst: Dst, f: Reg, args: Reg, n: Count) [fuel_spawn] "Starts a new actor running function value `f` with the `n` registers from `args`; returns its pid. Past the VM's actor limit raises `:limit`.";
            actor Spawnl "spawnl" (dst: Dst, f: Reg, args: Reg, n: Count) [fuel_spawn] "As `spawn`, and links the new actor to this one atomically.";
            actor Spawnm "spawnm" (dst: Dst, f: Reg, args: Reg, n: Count) [fuel_spawn] "As `spawn`, and monitors the new actor atomically; returns `{pid, ref}`.";
            actor Spawnx "spawnx" (dst: Dst, f: Reg, args: Reg, opts: Reg) [fuel_spawn] "Starts an actor running `f` with the list `args`, with options from the map `opts`: `:link`, `:monitor` (then returns `{pid, ref}`), `:max_mailbox` (past it the actor is killed with reason `{:limit, :max_mailbox}`), `:max_frames` (deeper calls raise `:stack_overflow`) and `:max_heap` (bytes the actor may hold, messages included; past it the actor is killed with reason `{:limit, :max_heap}`).";
            actor Send "send" (to: Reg, msg: Reg) "Sends `msg` to `to` (a pid, an atom registered as a name, or `{name, node}`: the actor registered as `name` on another node of the cluster); never blocks, except that a send to a node that is far behind suspends the sender until that node catches up. Sending to a pid that has exited drops the message; to an unregistered name raises `:noproc`.";
            actor Recv "recv" (dst: Dst) [blocks] "Takes the oldest message from the mailbox, waiting for one if it is empty.";
            actor Recvt "recvt" (dst: Dst, ms: Reg, target: Label) [blocks fuel_jump] "As `recv`, but waits at most `ms` milliseconds; on timeout jumps to `target` leaving `dst` unchanged.";
            actor Recvp "recvp" (dst: Dst, pat: Reg) [blocks] "Selective receive: takes the oldest message matching pattern `pat`, leaving the others in order. A pattern matches a value equal to it; the atom `:_` matches anything; a tuple or list pattern matches a tuple or list of the same length whose elements match. In assembly, a `{..}` pattern item `?rN` matches anything and binds: the element is copied into `rN` after the receive (see docs/language.md).";
            actor Recvpt "recvpt" (dst: Dst, pat: Reg, ms: Reg, target: Label) [blocks fuel_jump] "As `recvp`, waiting at most `ms` milliseconds; on timeout jumps to `target`.";
            actor Sleep "sleep" (ms: Reg) [blocks] "Suspends the actor for `ms` milliseconds.";
            actor Now "now" (dst: Dst) "Monotonic time in milliseconds since the VM started.";
            actor Yield "yield" () [blocks] "Lets other actors run before this one continues.";
            actor Yieldto "yieldto" (pid: Reg) [blocks] "Yields, asking that actor `pid` run next if it is runnable.";
            actor Register "register" (name: Reg, pid: Reg) "Registers atom `name` for `pid`; raises `:badarg` if the name is taken or the actor is not alive.";
            actor Unregister "unregister" (name: Reg) "Removes a registered name (no effect if it is not registered).";
            actor Whereis "whereis" (dst: Dst, name: Reg) "The pid registered as `name`, or `nil`.";
            actor Link "link" (pid: Reg) "Links this actor and `pid`: when one exits abnormally the other receives an exit signal. Linking to an actor that has exited delivers the signal at once (reason `:noproc`).";
            actor Unlink "unlink" (pid: Reg) "Removes a link.";
            actor Monitor "monitor" (dst: Dst, pid: Reg) "Monitors `pid`; returns a reference `r`. When `pid` exits this actor receives `{:DOWN, r, pid, reason}` (at once, with reason `:noproc`, if it is already gone).";
            actor Demonitor "demonitor" (r: Reg) "Cancels a monitor.";
            actor Trapexit "trapexit" (dst: Dst, on: Reg) "Sets whether exit signals from links arrive as messages `{:EXIT, pid, reason}` instead of ending this actor; returns the previous setting. `kill` cannot be trapped.";
            actor Exit "exit" (pid: Reg, reason: Reg) "Sends an exit signal with `reason` to `pid` (as if a linked actor had exited with it); `:normal` is ignored unless the target traps exits.";
            actor Kill "kill" (pid: Reg) "Ends `pid` with reason `:killed`; cannot be trapped or caught.";
            actor Stop "stop" (reason: Reg) [term blocks] "Ends this actor with `reason` (`:normal` is a normal exit).";
            actor Native "native" (dst: Dst, name: Const, args: Reg, n: Count) [blocks] "Calls the native function named by the constant (an atom) with the `n` registers from `args`. A native marked blocking runs off the scheduler threads while this actor is real-blocked; a panic in it raises `:panic` here. An unknown name raises `:badarg`.";
            actor Interrupt "interrupt" (pid: Reg, exc: Reg, mode: Reg) "Raises exception `exc` (`{kind, msg}`) in `pid`. Mode 0: only if it is waiting (receive, sleep, channel, I/O); mode 1: also if running (at its next fuel check) or in a blocking native call (when it returns); mode 2: stops it now, with exit reason `{:exception, kind, msg}` (as for an uncaught exception). Returns nothing; an interrupt that does not apply is dropped.";
            // ---- channels
            chan Chan "chan" (dst: Dst, cap: Reg) "A new channel with capacity `cap` (an int >= 0; 0 is a rendezvous: a send completes only when a receiver takes the value). A channel is freed when no actor can reach it.";
            chan Csend "csend" (ch: Reg, v: Reg) [blocks] "Sends `v` on channel `ch`, waiting until a receiver takes it (rendezvous) or there is buffer room. Sending on a closed channel raises `:closed`.";
            chan Crecv "crecv" (dst: Dst, ch: Reg, closed: Label) [blocks fuel_jump] "Receives from channel `ch`, waiting for a value; once the channel is closed and drained, jumps to `closed` instead.";
            chan Ctrysend "ctrysend" (dst: Dst, ch: Reg, v: Reg) "Sends `v` if that can complete now: `dst` is `true` if sent, `false` if it would wait. Raises `:closed` on a closed channel.";
            chan Ctryrecv "ctryrecv" (dst: Dst, ch: Reg) "Receives if a value is ready now: `dst` is `{:ok, value}`, `:empty` if it would wait, or `:closed` if the channel is closed and drained.";
            chan Cclose "cclose" (ch: Reg) "Closes a channel: parked receivers see it closed, parked senders raise `:closed`; buffered values can still be received. Closing twice raises `:closed`.";
            chan Select "select" (dst: Dst, cases: Reg, ms: Reg, target: Label) [blocks fuel_jump] "Waits for the first of a list of cases built at run time: `{:send, ch, v}`, `{:recv, ch}`, `{:msg, pattern}` (a message matching `pattern` in this actor's mailbox; `:_` matches any), `{:readable, socket}` (the socket has input or has ended) or `{:accept, listener}` (a connection, accepted). Commits to exactly one case and sets `dst` to `{i, :sent}`, `{i, :ok, value}` (a value, a message or an accepted connection), `{i, :closed}` or `{i, :readable}` (`i` counts from 0). When several are ready one is chosen at random; of the `{:msg, pattern}` cases, the oldest message that matches any is taken, as the first case it matches (looking through the mailbox is charged fuel, one unit per message, as for `recvp`). `ms` < 0 waits forever; 0 jumps to `target` at once if nothing is ready (a default branch); > 0 jumps to `target` after that many milliseconds.";
            // ---- appended ops (new opcodes go last so that existing opcode bytes never change)
            arith Remi "remi" (dst: Dst, a: Reg, imm: Imm) "`a rem imm`, typed as `rem` (an `imm` of 0 raises `:div_by_zero`).";
            jump Incjle "incjle" (a: Dst, limit: Reg, target: Label) [fuel_jump] "Counted-loop step: adds 1 to `a` (as `addi a, a, 1`) and jumps to `target` if the new `a <= limit` (as `jle`). `for i = 1, n` ends its body with `incjle ri, rn, body`.";
            arith Addw "addw" (dst: Dst, a: Reg, b: Reg) "Wrapping `a + b` of two ints (modulo 2^64, two's complement): never raises `:overflow`; anything but two ints raises `:type_error`.";
            arith Subw "subw" (dst: Dst, a: Reg, b: Reg) "Wrapping `a - b` of two ints, as `addw`.";
            arith Mulw "mulw" (dst: Dst, a: Reg, b: Reg) "Wrapping `a * b` of two ints, as `addw` (the low 64 bits of the product).";
            arith Lsr "lsr" (dst: Dst, a: Reg, b: Reg) "Logical `a >> b` for `0 <= b < 64` (else `:badarg`): zeros shift in at the top, so the result of a shift by 1 or more is never negative.";
            jump Jeqk "jeqk" (a: Reg, k: Const, target: Label) [fuel_jump] "Jumps if `a` equals the constant (as `eq`). The assembler also takes `jeq a, CONST, target` for it.";
            jump Jnek "jnek" (a: Reg, k: Const, target: Label) [fuel_jump] "Jumps unless `a` equals the constant. The assembler also takes `jne a, CONST, target` for it.";
            text Format "format" (dst: Dst, template: Const, args: Reg, n: Count) "A string built from the template constant (a string) and the `n` registers from `args`, one per directive in order: `~p` writes a value's literal form (strings quoted), `~s` its print form (a string bare, an atom without its colon), `~~` a tilde. A bytes template builds bytes, where `~s` writes a bytes value as its bytes. The verifier checks the template and that `n` equals its number of directives.";
            arith Rand "rand" (dst: Dst, lo: Reg, hi: Reg) "A uniformly random int in `lo..=hi` (ints, `lo <= hi`, else `:badarg`) from this actor's generator (see `vm run --seed`).";
            arith Randf "randf" (dst: Dst) "A uniformly random float in `[0, 1)` from this actor's generator.";
            actor MakeRef "make_ref" (dst: Dst) "A new reference: a value equal only to itself and its copies, unique across the VM and (naming its node) across a cluster; printed `#Ref<node.serial>`, usable in patterns, as a map key and in messages to other nodes.";
            arith Randb "randb" (dst: Dst, n: Reg) "`n` random bytes (`0 <= n <= 1048576`, else `:badarg`) from this actor's generator.";
        }
    };
}

macro_rules! operand_ty {
    (Dst) => {
        Reg
    };
    (Reg) => {
        Reg
    };
    (Count) => {
        u16
    };
    (Const) => {
        u32
    };
    (Label) => {
        u32
    };
    (Func) => {
        u32
    };
    (Imm) => {
        i32
    };
}

/// `$yes` if the column list holds column `$want` (`term`, `blocks` or `fuel_spawn`), else `$no`.
macro_rules! if_column {
    (term [term $($rest:ident)*] $yes:tt $no:tt) => {
        $yes
    };
    (blocks [blocks $($rest:ident)*] $yes:tt $no:tt) => {
        $yes
    };
    (fuel_spawn [fuel_spawn $($rest:ident)*] $yes:tt $no:tt) => {
        $yes
    };
    ($want:ident [] $yes:tt $no:tt) => {
        $no
    };
    ($want:ident [$other:ident $($rest:ident)*] $yes:tt $no:tt) => {
        if_column!($want [$($rest)*] $yes $no)
    };
}

/// True if `$v` (an `&Instr`) is one of the instructions whose op has column `$want`. Walks the
/// op list (`Variant [columns]` pairs) collecting those variants, then expands to a `match`
/// that lists only them, as a hand-written `matches!` would: the interpreter's loop uses it,
/// and a `match` with an arm per op compiles there to different register allocation.
macro_rules! instr_has_column {
    ($want:ident, $v:expr, [$($hit:ident)+]) => {
        match $v {
            $(Instr::$hit { .. })|+ => true,
            _ => false,
        }
    };
    ($want:ident, $v:expr, [$($hit:ident)*] $name:ident [$($col:ident)*] $($rest:tt)*) => {
        if_column!($want [$($col)*]
            { instr_has_column!($want, $v, [$($hit)* $name] $($rest)*) }
            { instr_has_column!($want, $v, [$($hit)*] $($rest)*) })
    };
}

/// The [`Fuel`] named by a column list (a second `fuel_*` column fails to compile).
macro_rules! op_fuel {
    () => {
        Fuel::Free
    };
    (fuel_call $($rest:ident)*) => {{
        no_fuel_column!($($rest)*);
        Fuel::Call
    }};
    (fuel_jump $($rest:ident)*) => {{
        no_fuel_column!($($rest)*);
        Fuel::BackwardJump
    }};
    (fuel_spawn $($rest:ident)*) => {{
        no_fuel_column!($($rest)*);
        Fuel::Spawn
    }};
    ($other:ident $($rest:ident)*) => {
        op_fuel!($($rest)*)
    };
}

/// Expands to nothing for a column list with no `fuel_*` column.
macro_rules! no_fuel_column {
    () => {};
    (term $($rest:ident)*) => {
        no_fuel_column!($($rest)*)
    };
    (blocks $($rest:ident)*) => {
        no_fuel_column!($($rest)*)
    };
}

/// Expands to nothing for a known column and fails to compile for anything else (a misspelt
/// column would otherwise be ignored).
macro_rules! known_column {
    (term) => {};
    (blocks) => {};
    (fuel_call) => {};
    (fuel_jump) => {};
    (fuel_spawn) => {};
}

/// The first operand if its kind is `Dst` (for `Instr::dst`).
macro_rules! dst_of {
    ($f:ident : Dst $(, $g:ident : $k:ident)*) => {
        Some($f)
    };
    ($($g:ident : $k:ident),*) => {
        None
    };
}

macro_rules! define_ops {
    ($( $group:ident $name:ident $mn:literal ( $($f:ident : $k:ident),* ) $([ $($col:ident)* ])? $doc:literal ; )*) => {
        const _: () = { $($($( known_column!($col); )*)?)* };

        /// A decoded instruction. Generated from [`for_each_op!`](crate::for_each_op).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[allow(missing_docs)]
        pub enum Instr {
            $( #[doc = $doc] $name { $($f: operand_ty!($k)),* }, )*
        }

        /// The opcode byte of each instruction, in op-list order. Generated from [`for_each_op!`](crate::for_each_op).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[allow(missing_docs)]
        pub enum Opcode {
            $( $name, )*
        }

        impl Opcode {
            /// Every opcode, indexed by its byte.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];

            /// The assembly mnemonic.
            pub fn mnemonic(self) -> &'static str {
                match self { $(Opcode::$name => $mn,)* }
            }

            /// The operand kinds, in order.
            pub fn operands(self) -> &'static [OperandKind] {
                match self { $(Opcode::$name => &[$(OperandKind::$k),*],)* }
            }

            /// The operand names, in order (for documentation and diagnostics).
            pub fn operand_names(self) -> &'static [&'static str] {
                match self { $(Opcode::$name => &[$(stringify!($f)),*],)* }
            }

            /// The documentation line.
            pub fn doc(self) -> &'static str {
                match self { $(Opcode::$name => $doc,)* }
            }

            /// The op-list group (`moves`, `arith`, ...).
            pub fn group(self) -> &'static str {
                match self { $(Opcode::$name => stringify!($group),)* }
            }

            /// True if execution never continues to the next instruction (column `term`).
            pub fn is_terminator(self) -> bool {
                match self { $(Opcode::$name => if_column!(term [$($($col)*)?] true false),)* }
            }

            /// True if the instruction may suspend the actor: the stepper can return
            /// `Step::Blocked` on it (column `blocks`).
            pub fn may_block(self) -> bool {
                match self { $(Opcode::$name => if_column!(blocks [$($($col)*)?] true false),)* }
            }

            /// What the instruction charges against the actor's fuel (column `fuel_*`).
            pub fn fuel(self) -> Fuel {
                match self { $(Opcode::$name => op_fuel!($($($col)*)?),)* }
            }
        }

        impl Instr {
            /// The instruction's opcode.
            pub fn opcode(&self) -> Opcode {
                match self { $(Instr::$name { .. } => Opcode::$name,)* }
            }

            /// True if the instruction's op has column `fuel_spawn` ([`Opcode::fuel`] is
            /// [`Fuel::Spawn`]). For the interpreter's loop, which asks for every instruction it
            /// runs out of line: a `match` listing only those variants compiles there exactly as
            /// a hand-written `matches!`, where comparing [`Opcode::fuel`] (or a bool per op)
            /// cost 3.5 instructions per fib call in register allocation (docs/BENCHMARKS.md).
            #[inline(always)]
            pub fn charges_spawn_fuel(&self) -> bool {
                instr_has_column!(fuel_spawn, self, [] $($name [$($($col)*)?])*)
            }

            /// The register the instruction writes, if any: its first operand when that is a
            /// `Dst` (the op list puts a `Dst` first; a test checks it). A direct match, since
            /// resuming every blocked instruction asks.
            #[allow(unused_variables)]
            pub fn dst(&self) -> Option<Reg> {
                match *self {
                    $(Instr::$name { $($f),* } => dst_of!($($f : $k),*),)*
                }
            }

            /// The operand values in op-list order, widened to `i64`.
            pub fn operands(&self) -> Operands {
                match *self {
                    $(Instr::$name { $($f),* } => Operands::from_slice(&[$($f as i64),*]),)*
                }
            }

            /// Builds an instruction from an opcode and operand values, checking the count and
            /// each value's range.
            pub fn from_operands(op: Opcode, vals: &[i64]) -> Result<Instr, OperandError> {
                let kinds = op.operands();
                if vals.len() != kinds.len() {
                    return Err(OperandError::Count { expected: kinds.len(), found: vals.len() });
                }
                for (i, (&v, &k)) in vals.iter().zip(kinds).enumerate() {
                    let (lo, hi) = k.range();
                    if v < lo || v > hi {
                        return Err(OperandError::Range { index: i, kind: k, value: v });
                    }
                }
                #[allow(unused_mut, unused_variables, unused_assignments)]
                let instr = match op {
                    $(Opcode::$name => {
                        let mut it = vals.iter();
                        Instr::$name { $($f: *it.next().expect("count checked") as operand_ty!($k)),* }
                    })*
                };
                Ok(instr)
            }
        }
    };
}

for_each_op!(define_ops);

/// Operand values of one instruction (at most four).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operands {
    vals: [i64; 4],
    len: u8,
}

impl Operands {
    fn from_slice(s: &[i64]) -> Operands {
        let mut vals = [0; 4];
        vals[..s.len()].copy_from_slice(s);
        Operands { vals, len: s.len() as u8 }
    }

    /// The values as a slice.
    pub fn as_slice(&self) -> &[i64] {
        &self.vals[..self.len as usize]
    }
}

/// Why [`Instr::from_operands`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperandError {
    /// Wrong number of operands.
    #[error("expected {expected} operands, found {found}")]
    Count {
        /// How many the op takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// An operand does not fit its kind.
    #[error("operand {index} ({kind:?}) out of range: {value}")]
    Range {
        /// Operand position.
        index: usize,
        /// Its kind.
        kind: OperandKind,
        /// The offending value.
        value: i64,
    },
}

impl Opcode {
    /// The opcode with byte `b`, if any.
    pub fn from_byte(b: u8) -> Option<Opcode> {
        Opcode::ALL.get(b as usize).copied()
    }

    /// The opcode byte.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The opcode with the given mnemonic.
    pub fn from_mnemonic(m: &str) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|op| op.mnemonic() == m)
    }

    /// Position of the `Dst` operand, if the op writes a register.
    pub fn dst_index(self) -> Option<usize> {
        self.operands().iter().position(|k| *k == OperandKind::Dst)
    }

    /// Position of the first `Label` operand, if any.
    pub fn label_index(self) -> Option<usize> {
        self.operands().iter().position(|k| *k == OperandKind::Label)
    }
}

impl Instr {
    /// The first label operand, if any.
    pub fn label(&self) -> Option<u32> {
        self.opcode().label_index().map(|i| self.operands().as_slice()[i] as u32)
    }
}

/// Renders `docs/isa.md` from the op list.
pub fn isa_markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str("# Instruction set\n\n");
    out.push_str(
        "Generated from `vm-core/src/ops.rs` (`for_each_op!`); a test fails when this file is out of\n",
    );
    out.push_str("date. Regenerate with `UPDATE_EXPECT=1 cargo test -p vm-core isa_doc`.\n\n");
    out.push_str(
        "Operand kinds: `rN` registers (`dst` is written, others read); `n` counts the registers of a\n",
    );
    out.push_str("window starting at the register before it; constants are literals; labels and functions\n");
    out.push_str("are names; `imm` is a signed 32-bit integer.\n\n");
    out.push_str(
        "Columns: **ends** marks a terminator, after which execution never continues with the next\n",
    );
    out.push_str("instruction (every function ends with one). **blocks** marks an instruction that may\n");
    out.push_str(
        "suspend the actor, leaving the program counter on itself until the runtime completes it.\n",
    );
    out.push_str(
        "**fuel** is what it charges against the actor's slice: fuel is charged on calls and backward\n",
    );
    out.push_str("jumps, never per instruction, and starting an actor costs as much as many calls.\n");
    // Ops appended at the end of the list (so that opcode bytes never change) still belong to
    // their group's table: groups are listed in order of first appearance.
    let mut groups: Vec<&str> = Vec::new();
    for op in Opcode::ALL {
        if !groups.contains(&op.group()) {
            groups.push(op.group());
        }
    }
    let ordered = groups.iter().flat_map(|g| Opcode::ALL.iter().filter(move |op| op.group() == *g));
    let mut group = "";
    for op in ordered {
        if op.group() != group {
            group = op.group();
            let _ = write!(
                out,
                "\n## {}\n\n| instruction | ends | blocks | fuel | meaning |\n|---|---|---|---|---|\n",
                group_title(group)
            );
        }
        let mut syntax = op.mnemonic().to_string();
        for (i, (name, kind)) in op.operand_names().iter().zip(op.operands()).enumerate() {
            syntax.push_str(if i == 0 { " " } else { ", " });
            match kind {
                OperandKind::Dst | OperandKind::Reg => syntax.push_str(name),
                OperandKind::Count => syntax.push('n'),
                OperandKind::Const => syntax.push_str("CONST"),
                OperandKind::Label => syntax.push_str("LABEL"),
                OperandKind::Func => syntax.push_str("FUNC"),
                OperandKind::Imm => syntax.push_str("imm"),
            }
        }
        let ends = if op.is_terminator() { "yes" } else { "" };
        let blocks = if op.may_block() { "may" } else { "" };
        let fuel = match op.fuel() {
            Fuel::Free => String::new(),
            Fuel::Call => "1".to_string(),
            Fuel::BackwardJump => "1 if backward".to_string(),
            Fuel::Spawn => SPAWN_FUEL.to_string(),
        };
        let _ = writeln!(out, "| `{syntax}` | {ends} | {blocks} | {fuel} | {} |", op.doc());
    }
    out
}

fn group_title(g: &str) -> &'static str {
    match g {
        "moves" => "Moves and constants",
        "arith" => "Arithmetic",
        "compare" => "Comparison",
        "logic" => "Boolean logic",
        "jump" => "Jumps and branches",
        "call" => "Calls and function values",
        "data" => "Tuples, lists and maps",
        "text" => "Strings and bytes",
        "exception" => "Exceptions",
        "actor" => "Actors and effects",
        "chan" => "Channels",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_are_unique_and_round_trip() {
        for (i, op) in Opcode::ALL.iter().enumerate() {
            assert_eq!(op.byte() as usize, i);
            assert_eq!(Opcode::from_mnemonic(op.mnemonic()), Some(*op));
        }
        assert!(Opcode::ALL.len() < 256);
    }

    #[test]
    fn count_follows_a_register() {
        for op in Opcode::ALL {
            let k = op.operands();
            for i in 0..k.len() {
                if k[i] == OperandKind::Count {
                    assert!(i > 0 && k[i - 1] == OperandKind::Reg, "{op:?}");
                }
            }
        }
    }

    #[test]
    fn operands_round_trip() {
        let i = Instr::Call { dst: 3, f: 7, args: 4, n: 2 };
        let back = Instr::from_operands(i.opcode(), i.operands().as_slice()).unwrap();
        assert_eq!(i, back);
        assert_eq!(i.dst(), Some(3));
        assert!(Instr::from_operands(Opcode::Move, &[1]).is_err());
        assert!(Instr::from_operands(Opcode::Move, &[1, 70000]).is_err());
    }

    #[test]
    fn a_dst_operand_comes_first() {
        // `Instr::dst` relies on it.
        for op in Opcode::ALL {
            let kinds = op.operands();
            assert!(kinds.iter().skip(1).all(|k| *k != OperandKind::Dst), "{op:?}");
        }
    }

    #[test]
    fn instr_stays_small() {
        assert!(std::mem::size_of::<Instr>() <= 12, "{}", std::mem::size_of::<Instr>());
    }

    #[test]
    fn isa_doc_is_up_to_date() {
        crate::testgen::expect_file("docs/isa.md", isa_markdown().as_bytes(), "isa_doc");
    }
}
