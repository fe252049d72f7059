//! Instruction lines: a mnemonic from the op list, then its operands.
//!
//! 1. Operands are parsed by the kind the op list gives each one (register, constant, label,
//!    function, count); a constant operand is a literal or a `.const` name, pooled on first use.
//! 2. Label and function operands are placeholders recorded as [`NameRef`]s; the assembler
//!    patches them when the function ends (labels) or when every file is read (functions).
//! 3. An operand list (`[a, 1, b]`) becomes a register window: items that are not already a run
//!    of consecutive registers are first moved into scratch registers (see [`SCRATCH`]).

use super::{Asm, FuncBuild, MAX_REG, NameRef, NamedConst, Pending, SCRATCH, decimal, to_u32};
use crate::asm::lex::{self, Cursor, PResult, SpanError};
use crate::asm::{literal, nearest};
use crate::ops::{Opcode, OperandKind};
use crate::value::Value;

/// An operand list item.
enum Item {
    Reg(i64),
    Const(Value),
    /// A nested tuple (`Opcode::Tuple`) or list (`Opcode::List`) holding registers: its items
    /// are loaded into their own scratch registers from the given one, then built.
    Built(Opcode, i64, Vec<Item>),
}

/// How deeply built items may nest (`[{r1, {r2}}]` is two levels).
const MAX_BUILT_DEPTH: usize = 16;

/// A parsed operand list: the window it becomes, and the items to load into scratch registers
/// first (none when the items are already a run of consecutive registers).
struct OperandList {
    start: i64,
    count: i64,
    /// Where its scratch registers end (`SCRATCH + slot` after the last one it uses, nested
    /// items' included).
    end: i64,
    moves: Vec<Item>,
    /// Binding items `?rN` of a pattern: (element index, register, span of the item). The
    /// pattern holds `:_` there, and the matched element is copied to the register afterwards.
    binds: Vec<(i64, i64, usize, usize)>,
}

/// What an operand list stands for.
#[derive(Clone, Copy, PartialEq)]
enum ListKind {
    /// A window `reg, count`: a run of consecutive registers is used in place.
    Window,
    /// A tuple built in its own scratch registers.
    Tuple,
    /// A tuple that is a pattern, where binding items `?rN` may appear.
    Pattern,
}

impl ListKind {
    /// The kind of a tuple written as operand `i` of `op`.
    fn tuple(op: Opcode, i: usize) -> ListKind {
        if matches!(op, Opcode::Recvp | Opcode::Recvpt) && i == 1 {
            ListKind::Pattern
        } else {
            ListKind::Tuple
        }
    }
}

/// A parsed operand before names are resolved and constants pooled.
enum Operand {
    Val(i64),
    Const(Value),
    Label(String),
    Func(String),
}

impl Asm<'_> {
    // ---- instructions

    /// One instruction line: the instruction, preceded by the moves its operand list expands
    /// to (see [`SCRATCH`]).
    pub(super) fn instruction(&mut self, f: &mut FuncBuild, c: &mut Cursor) -> PResult<Vec<Pending>> {
        let at = c.pos;
        let mnemonic = c.ident().unwrap_or("");
        let Some(op) = Opcode::from_mnemonic(mnemonic) else {
            return Err(unknown_mnemonic(mnemonic, at));
        };
        if !c.at_end() && !c.peek().is_some_and(char::is_whitespace) {
            return Err(c.expected("a space after the mnemonic"));
        }
        let len = c.end() - at;
        let mut spans = lex::split_operands(c.src(), c.pos, c.end())?;
        let op = const_form(op, c.src(), &spans);
        let kinds = op.operands();
        // An operand list `[a, b, ...]` in place of a window's `reg, count`.
        let window = kinds.windows(2).position(|k| k == [OperandKind::Reg, OperandKind::Count]);
        // Scratch slots are handed out in operand order within the instruction.
        let mut slots = 0;
        let mut list = None;
        if let Some(w) = window
            && spans.len() + 1 == kinds.len()
            && c.src()[spans[w].0..spans[w].1].starts_with('[')
        {
            let (s, e) = spans[w];
            let l = self.operand_list(f, c.src(), s, e, slots, ListKind::Window)?;
            slots = l.end - SCRATCH;
            list = Some(l);
            spans.insert(w + 1, (s, e));
        }
        // A tuple `{item, ...}` in place of a register operand, or a list `[item, ...]` holding
        // registers (one of constants is a constant): built in a scratch register.
        let mut tuples: Vec<(usize, OperandList, Opcode)> = Vec::new();
        for (i, &(s, e)) in spans.iter().enumerate() {
            if kinds.get(i) != Some(&OperandKind::Reg) || Some(i) == window {
                continue;
            }
            let text = &c.src()[s..e];
            let built = if text.starts_with('{') {
                Opcode::Tuple
            } else if text.starts_with('[') && self.read_constant(c.src(), s, e).is_err() {
                Opcode::List
            } else {
                continue;
            };
            let kind = if built == Opcode::Tuple { ListKind::tuple(op, i) } else { ListKind::Tuple };
            let l = self.operand_list(f, c.src(), s, e, slots, kind)?;
            slots = l.end - SCRATCH;
            tuples.push((i, l, built));
        }
        if spans.len() != kinds.len() {
            let n = kinds.len();
            let msg = format!(
                "`{mnemonic}` takes {n} operand{}, found {}",
                if n == 1 { "" } else { "s" },
                spans.len()
            );
            return Err(SpanError::new(at, len, msg).with_hint(format!("expected: {}", syntax(op))));
        }
        let mut parsed: Vec<(Operand, usize, usize)> = Vec::with_capacity(kinds.len());
        let mut consts: Vec<(i64, Value)> = Vec::new();
        for (i, (&kind, &(s, e))) in kinds.iter().zip(&spans).enumerate() {
            if let (Some(w), Some(l)) = (window, &list)
                && (i == w || i == w + 1)
            {
                parsed.push((Operand::Val(if i == w { l.start } else { l.count }), s, e - s));
                continue;
            }
            if let Some((_, l, _)) = tuples.iter().find(|(k, ..)| *k == i) {
                parsed.push((Operand::Val(l.start + l.count), s, e - s));
                continue;
            }
            // A constant where a register is read: loaded into a scratch register first.
            if kind == OperandKind::Reg && Some(i) != window && !is_register(c.src()[s..e].trim()) {
                let value = self.read_constant(c.src(), s, e)?;
                consts.push((SCRATCH + slots, value));
                parsed.push((Operand::Val(SCRATCH + slots), s, e - s));
                slots += 1;
                continue;
            }
            let prev = match parsed.last() {
                Some((Operand::Val(v), ..)) if i > 0 => Some(*v),
                _ => None,
            };
            let mut oc = Cursor::new(c.src(), s, e);
            let operand = self.operand(f, kind, &mut oc, prev)?;
            oc.expect_end("the operand")?;
            parsed.push((operand, s, e - s));
        }
        // Every operand is good: only now record name uses, pool constants and count registers.
        let mut out = Vec::new();
        if let Some(l) = list {
            out.extend(self.list_moves(f, l, at, len));
        }
        // A pattern's bindings: `tget`s from the matched message (in the destination) after the
        // instruction, so a pattern without them costs nothing, and a `recvpt` that times out
        // (jumping away) binds nothing.
        let mut binds = Vec::new();
        for (_, l, _) in &tuples {
            for &(k, r, bs, bl) in &l.binds {
                let Some(&(Operand::Val(dst), ..)) = parsed.first() else { continue };
                if r == dst {
                    return Err(SpanError::new(bs, bl, format!("`?r{r}` binds the register the message is received into"))
                        .with_hint(format!("bind into another register: the match is in r{dst}, whose elements are copied after it arrives")));
                }
                if binds.iter().any(|&(_, b)| b == r) {
                    return Err(SpanError::new(bs, bl, format!("`?r{r}` is bound twice in one pattern"))
                        .with_hint("bind each element to its own register; to test that two elements are equal, compare them after the receive"));
                }
                binds.push((k, r));
            }
        }
        for (_, l, built) in tuples {
            let (items, n, end) = (l.start, l.count, l.end);
            out.extend(self.list_moves(f, l, at, len));
            out.push(Pending { op: built, vals: vec![items + n, items, n], at, len, bad: false });
            f.scratch = f.scratch.max(end - SCRATCH);
        }
        if op == Opcode::Move
            && let [(_, value)] = &mut consts[..]
            && let Some(&(Operand::Val(dst), ..)) = parsed.first()
        {
            // `move rN, CONST` is the load itself, into rN: no scratch register.
            f.max_reg = f.max_reg.max(Some(dst));
            let (op, vals) = self.load(dst, std::mem::take(value));
            out.push(Pending { op, vals, at, len, bad: false });
            return Ok(out);
        }
        for (slot, value) in consts {
            f.scratch = f.scratch.max(slot - SCRATCH + 1);
            let (op, vals) = self.load(slot, value);
            out.push(Pending { op, vals, at, len, bad: false });
        }
        let instr = f.code.len() + out.len();
        let mut vals = Vec::with_capacity(kinds.len());
        for (i, ((operand, at, len), &kind)) in parsed.into_iter().zip(kinds).enumerate() {
            let val = match operand {
                Operand::Val(v) => v,
                Operand::Const(value) => self.pool(value),
                Operand::Label(name) => {
                    f.label_refs.push(NameRef { instr, operand: i, name, at, len });
                    0
                }
                Operand::Func(name) => {
                    f.func_refs.push(NameRef { instr, operand: i, name, at, len });
                    0
                }
            };
            let highest = match kind {
                OperandKind::Dst | OperandKind::Reg => Some(val),
                OperandKind::Count if val > 0 => vals.last().map(|reg| reg + val - 1),
                _ => None,
            };
            // Scratch registers are placed above every other register at `.end`.
            if highest.is_none_or(|h| h >= 0) {
                f.max_reg = f.max_reg.max(highest);
            }
            vals.push(val);
        }
        let dst = vals.first().copied().unwrap_or(0);
        out.push(Pending { op, vals, at, len, bad: false });
        for (k, r) in binds {
            f.max_reg = f.max_reg.max(Some(r));
            out.push(Pending { op: Opcode::Tget, vals: vec![r, dst, k], at, len, bad: false });
        }
        Ok(out)
    }

    /// Parses an operand list `[item, ...]` (or a tuple's items `{item, ...}`) spanning `s..e`:
    /// each item a register or a constant. Registers already in a run `rK, rK+1, ...` are the
    /// window itself, unless `kind` is a tuple (which needs its own registers): otherwise the
    /// items are loaded into the scratch slots from `slot`. In a pattern, an item `?rN` binds.
    fn operand_list(
        &self,
        f: &FuncBuild,
        src: &str,
        s: usize,
        e: usize,
        slot: i64,
        kind: ListKind,
    ) -> PResult<OperandList> {
        let inner = lex::split_operands(src, s + 1, e - 1)?;
        let mut items = Vec::with_capacity(inner.len());
        let mut binds = Vec::new();
        // Nested items' registers go after the list's own (and after a tuple's result).
        let own = slot + inner.len() as i64 + i64::from(kind != ListKind::Window);
        let mut next = own;
        for &(a, b) in &inner {
            let mut oc = Cursor::new(src, a, b);
            let text = src[a..b].trim();
            let item = if let Some(reg) = text.strip_prefix('?') {
                let (bs, bl) = (a + (src[a..b].len() - src[a..b].trim_start().len()), text.len());
                if kind != ListKind::Pattern {
                    return Err(SpanError::new(bs, bl, format!("`{text}` binds, but this is not a pattern"))
                        .with_hint("a binding `?rN` goes in the `{..}` pattern of `recvp` or `recvpt`; elsewhere write the register itself"));
                }
                if !is_register(reg) {
                    return Err(SpanError::new(bs, bl, format!("`{text}` binds no register"))
                        .with_hint("write `?` before a register, as in `recvp r1, {:reply, r2, ?r3}`"));
                }
                oc.pos = bs + 1;
                match self.operand(f, OperandKind::Reg, &mut oc, None)? {
                    Operand::Val(r) => binds.push((items.len() as i64, r, bs, bl)),
                    _ => unreachable!("a register operand is a value"),
                }
                Item::Const(Value::Atom(crate::atom::atoms::WILDCARD))
            } else if is_register(text) {
                match self.operand(f, OperandKind::Reg, &mut oc, None)? {
                    Operand::Val(r) => Item::Reg(r),
                    _ => unreachable!("a register operand is a value"),
                }
            } else {
                self.list_item(f, src, a, b, &mut next, 0)?
            };
            if matches!(item, Item::Reg(_)) || text.starts_with('?') {
                oc.expect_end("the list item")?;
            }
            items.push(item);
        }
        let count = items.len() as i64;
        if count > i64::from(u16::MAX) {
            return Err(SpanError::new(s, e - s, format!("a list of {count} operands is too long")));
        }
        let run = match items.first() {
            _ if kind != ListKind::Window => None,
            None => Some(0),
            Some(Item::Reg(first)) => {
                let consecutive = items
                    .iter()
                    .enumerate()
                    .all(|(k, it)| matches!(it, Item::Reg(r) if *r == first + k as i64));
                consecutive.then_some(*first)
            }
            Some(_) => None,
        };
        Ok(match run {
            Some(start) => OperandList { start, count, end: SCRATCH + slot, moves: Vec::new(), binds },
            None => OperandList { start: SCRATCH + slot, count, end: SCRATCH + next, moves: items, binds },
        })
    }

    /// A list item `s..e` that is not a register nor a binding: a constant, or else a tuple
    /// `{..}` or list `[..]` holding registers, whose items get the scratch slots from `next`
    /// (nested ones after them).
    fn list_item(
        &self,
        f: &FuncBuild,
        src: &str,
        s: usize,
        e: usize,
        next: &mut i64,
        depth: usize,
    ) -> PResult<Item> {
        let text = src[s..e].trim();
        let ts = s + (src[s..e].len() - src[s..e].trim_start().len());
        let mut c = Cursor::new(src, s, e);
        if is_register(text) {
            return match self.operand(f, OperandKind::Reg, &mut c, None)? {
                Operand::Val(r) => Ok(Item::Reg(r)),
                _ => unreachable!("a register operand is a value"),
            };
        }
        if text.starts_with('?') {
            return Err(SpanError::new(ts, text.len(), format!("`{text}` binds, but this is not a pattern"))
                .with_hint("a binding `?rN` is an item of the `{..}` pattern of `recvp` or `recvpt` itself, not of a tuple or list nested in it"));
        }
        let constant = self.constant(&mut c).and_then(|v| c.expect_end("the list item").map(|()| v));
        let op = match (constant, text.as_bytes()) {
            (Ok(v), _) => return Ok(Item::Const(v)),
            (Err(_), [b'{', .., b'}']) => Opcode::Tuple,
            (Err(_), [b'[', .., b']']) => Opcode::List,
            (Err(err), _) => return Err(err),
        };
        if depth >= MAX_BUILT_DEPTH {
            return Err(SpanError::new(
                ts,
                text.len(),
                format!("items nest more than {MAX_BUILT_DEPTH} deep"),
            )
            .with_hint("build the inner values in registers first"));
        }
        let inner = lex::split_operands(src, ts + 1, ts + text.len() - 1)?;
        let region = SCRATCH + *next;
        *next += inner.len() as i64;
        let items = inner
            .iter()
            .map(|&(a, b)| self.list_item(f, src, a, b, next, depth + 1))
            .collect::<PResult<Vec<_>>>()?;
        Ok(Item::Built(op, region, items))
    }

    /// The instructions that load an operand list's items into scratch registers (slots
    /// `SCRATCH..`, placed at `.end`), recording the registers they read.
    fn list_moves(&mut self, f: &mut FuncBuild, l: OperandList, at: usize, len: usize) -> Vec<Pending> {
        if !l.moves.is_empty() {
            f.scratch = f.scratch.max(l.end - SCRATCH);
        }
        let mut out = Vec::with_capacity(l.moves.len());
        for (k, item) in l.moves.into_iter().enumerate() {
            self.load_item(f, l.start + k as i64, item, (at, len), &mut out);
        }
        out
    }

    /// Appends the instructions that put `item` in register `dst`: a nested tuple or list
    /// has its items loaded first, into its own scratch registers.
    fn load_item(
        &mut self,
        f: &mut FuncBuild,
        dst: i64,
        item: Item,
        span: (usize, usize),
        out: &mut Vec<Pending>,
    ) {
        let (op, vals) = match item {
            Item::Reg(r) => {
                f.max_reg = f.max_reg.max(Some(r));
                (Opcode::Move, vec![dst, r])
            }
            Item::Const(v) => self.load(dst, v),
            Item::Built(op, region, items) => {
                let n = items.len() as i64;
                for (k, it) in items.into_iter().enumerate() {
                    self.load_item(f, region + k as i64, it, span, out);
                }
                (op, vec![dst, region, n])
            }
        };
        out.push(Pending { op, vals, at: span.0, len: span.1, bad: false });
    }

    /// The instruction that loads constant `value` into register `dst`: `int` for a small
    /// int, `nil` for nil, else `const` from the pool.
    fn load(&mut self, dst: i64, value: Value) -> (Opcode, Vec<i64>) {
        match value {
            Value::Int(i) if i32::try_from(i).is_ok() => (Opcode::Int, vec![dst, i]),
            Value::Nil => (Opcode::Nil, vec![dst]),
            v => (Opcode::Const, vec![dst, self.pool(v)]),
        }
    }

    /// A constant written where a register is read (`s..e`, not a register). A word that is no
    /// literal gets the register error, since a misspelt register is the likelier mistake.
    fn read_constant(&self, src: &str, s: usize, e: usize) -> PResult<Value> {
        let mut c = Cursor::new(src, s, e);
        let parsed = self.constant(&mut c).and_then(|v| c.expect_end("the operand").map(|()| v));
        let word = src[s..e].trim_start().starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_');
        if parsed.is_err() && word {
            let mut rc = Cursor::new(src, s, e);
            return match register(&mut rc) {
                Err(err) => Err(err.with_hint(
                    "a register is read here, so a constant also works: `5`, `:ok`, `\"text\"`, `b\"\\n\"`, `$NAME`",
                )),
                // `r1 r2`: the register is fine, what follows it is not.
                Ok(_) => rc.expect_end("the operand").and(parsed),
            };
        }
        parsed
    }

    /// Parses one operand of kind `kind`; `prev` is the previous operand's value (the window's
    /// first register, for a count).
    fn operand(
        &self,
        f: &FuncBuild,
        kind: OperandKind,
        c: &mut Cursor,
        prev: Option<i64>,
    ) -> PResult<Operand> {
        let at = c.pos;
        Ok(match kind {
            OperandKind::Dst | OperandKind::Reg => {
                let r = register(c).map_err(|e| match kind {
                    OperandKind::Dst if e.hint.is_none() => {
                        e.with_hint("this operand is written, so it must be a register")
                    }
                    _ => e,
                })?;
                if let Some(regs) = f.regs.filter(|&n| r >= i64::from(n)) {
                    return Err(SpanError::new(at, c.pos - at, format!("register r{r} is out of range"))
                        .with_hint(format!(
                            "`{}` declares {regs} registers (r0 to r{}); raise REGS in its `.func` or leave \
                             it out to have it counted",
                            f.name,
                            i64::from(regs) - 1
                        )));
                }
                Operand::Val(r)
            }
            OperandKind::Count => {
                let n = decimal(c, "a count (a non-negative integer)")?;
                let span = |msg: String| SpanError::new(at, c.pos - at, msg);
                let reg = prev.unwrap_or(0);
                if n > u64::from(u16::MAX) || reg + n as i64 - 1 > MAX_REG {
                    return Err(span(format!("count {n} is out of range"))
                        .with_hint(format!("the window r{reg}.. must end at r{MAX_REG} or below")));
                }
                let n = n as i64;
                if let Some(regs) = f.regs.filter(|&r| reg + n > i64::from(r)) {
                    return Err(span(format!(
                        "the window r{reg}..r{} goes past the last register",
                        reg + n - 1
                    ))
                    .with_hint(format!("`{}` declares {regs} registers in its `.func`", f.name)));
                }
                Operand::Val(n)
            }
            OperandKind::Const => Operand::Const(self.constant(c)?),
            OperandKind::Imm => {
                let value = match c.peek() {
                    Some('$') => self.named_const(c)?,
                    Some(ch) if ch == '-' || ch.is_ascii_digit() => literal::literal(c, 0)?,
                    _ => return Err(c.expected("an integer")),
                };
                let span = |msg: String| SpanError::new(at, c.pos - at, msg);
                match value {
                    Value::Int(i) if i32::try_from(i).is_ok() => Operand::Val(i),
                    Value::Int(i) => {
                        return Err(span(format!("immediate {i} does not fit in 32 bits"))
                            .with_hint("load it with `const` instead"));
                    }
                    other => return Err(span(format!("expected an integer, found {}", other.repr()))),
                }
            }
            OperandKind::Label => Operand::Label(name(c, "a label name")?),
            OperandKind::Func => {
                let word = name(c, "a function name")?;
                if is_register(&word) && !self.func_names.contains_key(&word) {
                    return Err(SpanError::new(
                        at,
                        c.pos - at,
                        format!("expected a function name, found `{word}`"),
                    )
                    .with_hint("a function value held in a register is called with `callv` or `tcallv`"));
                }
                Operand::Func(word)
            }
        })
    }

    /// A constant operand: a literal or `$NAME`.
    pub(super) fn constant(&self, c: &mut Cursor) -> PResult<Value> {
        if c.peek() == Some('$') { self.named_const(c) } else { literal::literal(c, 0) }
    }

    pub(super) fn lookup(&self, name: &str) -> Option<&NamedConst> {
        self.scopes.iter().rev().find_map(|scope| scope.get(name))
    }

    /// `$NAME`, looked up in the visible `.const` scopes.
    fn named_const(&self, c: &mut Cursor) -> PResult<Value> {
        let at = c.pos;
        c.bump();
        let Some(name) = c.ident() else {
            return Err(c.expected("a constant name after `$`"));
        };
        if let Some(k) = self.lookup(name) {
            return Ok(k.value.clone());
        }
        let visible = self.scopes.iter().flat_map(|s| s.keys().map(String::as_str));
        let hint = match nearest(name, visible) {
            Some(near) => format!("did you mean `${near}`?"),
            None => format!("define it before its use with `.const {name} VALUE`"),
        };
        Err(SpanError::new(at, c.pos - at, format!("undefined constant `${name}`")).with_hint(hint))
    }

    fn pool(&mut self, value: Value) -> i64 {
        if let Some(&i) = self.const_index.get(&value) {
            return i64::from(i);
        }
        let i = to_u32(self.consts.len());
        self.consts.push(value.clone());
        self.const_index.insert(value, i);
        i64::from(i)
    }
}

/// `rN`.
fn register(c: &mut Cursor) -> PResult<i64> {
    let at = c.pos;
    let word = c.ident().unwrap_or("");
    if !is_register(word) {
        c.pos = at;
        return Err(c.expected("a register (`r0`, `r1`, ...)"));
    }
    match word[1..].parse::<i64>() {
        Ok(n) if n <= MAX_REG => Ok(n),
        _ => Err(SpanError::new(at, word.len(), format!("register `{word}` is out of range"))
            .with_hint(format!("registers are r0 to r{MAX_REG}"))),
    }
}

/// `jeq a, CONST, target` and `jne a, CONST, target` are `jeqk` and `jnek`: the comparison
/// with a constant picks its op by the form of the second operand, as people expect of `jeq`.
fn const_form(op: Opcode, src: &str, spans: &[(usize, usize)]) -> Opcode {
    let constant = spans.get(1).is_some_and(|&(s, e)| !is_register(src[s..e].trim()));
    match op {
        Opcode::Jeq if constant && spans.len() == 3 => Opcode::Jeqk,
        Opcode::Jne if constant && spans.len() == 3 => Opcode::Jnek,
        _ => op,
    }
}

fn is_register(word: &str) -> bool {
    word.len() > 1 && word.starts_with('r') && word[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A label or function name.
fn name(c: &mut Cursor, what: &str) -> PResult<String> {
    c.ident().map(str::to_string).ok_or_else(|| c.expected(what))
}

/// `add dst, a, b`: an instruction's syntax from the op list.
fn syntax(op: Opcode) -> String {
    let names = op.operand_names();
    if names.is_empty() {
        op.mnemonic().to_string()
    } else {
        format!("{} {}", op.mnemonic(), names.join(", "))
    }
}

fn unknown_mnemonic(mnemonic: &str, at: usize) -> SpanError {
    let e = SpanError::new(at, mnemonic.len(), format!("unknown instruction `{mnemonic}`"));
    let lower = mnemonic.to_ascii_lowercase();
    if Opcode::from_mnemonic(&lower).is_some() {
        return e.with_hint(format!("mnemonics are lower case: `{lower}`"));
    }
    match nearest(mnemonic, Opcode::ALL.iter().map(|op| op.mnemonic())) {
        Some(near) => e.with_hint(format!("did you mean `{near}`?")),
        None => e.with_hint("docs/isa.md lists every instruction"),
    }
}
