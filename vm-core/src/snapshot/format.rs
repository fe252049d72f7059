//! The container of a snapshot file: magic, version, checksummed sections (see the parent
//! module's docs for the layout).

use super::{ContainerImage, Snapshot, SnapshotError, module_hash, v1};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The ten bytes every snapshot file starts with. As PNG's do, the line endings and the
/// DOS end-of-file byte catch a file mangled by a text-mode transfer.
pub const MAGIC: [u8; 10] = *b"VMSNAP\r\n\x1a\n";
/// The major format version this VM reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// The minor format version this VM writes (it reads any minor version of its major).
/// 1.1 added `v1::VRef::Ref` (references; a 1.0 reader refuses a file holding one as damaged)
/// and the custom limits section (`section::LIMITS`, which a 1.0 reader skips). Both are
/// additions a 1.1 reader of either kind reads or skips, so one minor version holds them.
/// 1.2 added the custom rng section (`section::RNG`, which 1.0 and 1.1 readers skip: they
/// resume with fresh generators). A file without it (1.0, 1.1) is read as before.
/// 1.3 added the custom containers section (`section::CONTAINERS`), written only for a VM of
/// several containers: a 1.2 reader skips it and then refuses the file, whose actors do not fit
/// the module section. A file without it (1.0 to 1.2, or a VM of one program) is read as before.
pub const VERSION_MINOR: u16 = 3;

/// Section ids.
pub mod section {
    /// The end section: the CRC-32 of everything before it.
    pub const END: u8 = 0;
    /// Counters, configuration, clocks.
    pub const META: u8 = 1;
    /// The module's `.vbc` bytes.
    pub const MODULE: u8 = 2;
    /// Atom names and shared values.
    pub const VALUES: u8 = 3;
    /// The actors.
    pub const ACTORS: u8 = 4;
    /// The channels.
    pub const CHANNELS: u8 = 5;
    /// The shared tables.
    pub const TABLES: u8 = 6;
    /// The resources.
    pub const RESOURCES: u8 = 7;
    /// Ids with this bit set are custom sections, which readers skip.
    pub const CUSTOM: u8 = 0x80;
    /// Actor limits (format 1.1): a custom section, so that 1.0 readers skip it.
    pub const LIMITS: u8 = 0x80;
    /// The actors' random generators (format 1.2): a custom section, so older readers skip it.
    pub const RNG: u8 = 0x81;
    /// The named containers (format 1.3): a custom section, so older readers skip it.
    pub const CONTAINERS: u8 = 0x82;

    /// A section's name, for messages.
    pub fn name(id: u8) -> &'static str {
        match id {
            END => "end",
            META => "meta",
            MODULE => "module",
            VALUES => "values",
            ACTORS => "actors",
            CHANNELS => "channels",
            TABLES => "tables",
            RESOURCES => "resources",
            LIMITS => "limits",
            RNG => "rng",
            CONTAINERS => "containers",
            _ if id & CUSTOM != 0 => "custom",
            _ => "unknown",
        }
    }
}

/// Bytes of a section header: id, length, checksum.
const HEADER: usize = 1 + 4 + 4;

/// Serialises a snapshot in the current format version. The meta section's module hash is
/// computed here from the module's bytes.
///
/// # Panics
///
/// Only if a section exceeds 4 GiB, which the length field cannot express.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let vbc = crate::bytecode::encode(&s.module);
    let meta = v1::Meta { module_hash: module_hash(&vbc), ..s.meta.clone() };
    let mut out = Vec::with_capacity(vbc.len() + 64 * (s.actors.len() + s.values.shared.len()) + 256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    out.extend_from_slice(&VERSION_MINOR.to_le_bytes());
    put_body(&mut out, section::META, &meta);
    put_section(&mut out, section::MODULE, |out| out.extend_from_slice(&vbc));
    put_body(&mut out, section::VALUES, &s.values);
    put_body(&mut out, section::ACTORS, &s.actors);
    put_body(&mut out, section::CHANNELS, &s.channels);
    put_body(&mut out, section::TABLES, &s.tables);
    put_body(&mut out, section::RESOURCES, &s.resources);
    if !s.limits.is_empty() {
        put_body(&mut out, section::LIMITS, &s.limits);
    }
    if !s.rngs.is_empty() {
        put_body(&mut out, section::RNG, &s.rngs);
    }
    if !s.containers.is_empty() || !s.shared_channels.is_empty() {
        let containers = v1::Containers {
            containers: s
                .containers
                .iter()
                .map(|c| v1::Container {
                    module: v1::Blob(crate::bytecode::encode(&c.module)),
                    ..c.spec.clone()
                })
                .collect(),
            shared_channels: s.shared_channels.clone(),
        };
        put_body(&mut out, section::CONTAINERS, &containers);
    }
    let file_crc = crc32fast::hash(&out);
    put_section(&mut out, section::END, |out| out.extend_from_slice(&file_crc.to_le_bytes()));
    out
}

fn put_body<T: Serialize>(out: &mut Vec<u8>, id: u8, body: &T) {
    put_section(out, id, |out| {
        // Our types hold only sequences of known length, strings, integers and enums, all of
        // which postcard writes into a growable vector without fail.
        postcard::to_io(body, out).expect("postcard writes snapshot types to a Vec");
    });
}

/// Writes a section header, the body `fill` appends, then patches the length and checksum in.
fn put_section(out: &mut Vec<u8>, id: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(id);
    out.extend_from_slice(&[0; 8]);
    fill(out);
    let body = &out[at + HEADER..];
    let len = u32::try_from(body.len()).expect("a snapshot section exceeds 4 GiB");
    let crc = crc32fast::hash(body);
    out[at + 1..at + 5].copy_from_slice(&len.to_le_bytes());
    out[at + 5..at + 9].copy_from_slice(&crc.to_le_bytes());
}

fn damaged(msg: String) -> SnapshotError {
    SnapshotError::Damaged(msg)
}

/// Parses and checks a snapshot file; see the parent module's docs for everything it checks.
/// Never panics; every error says what was wrong, and where.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let (sections, custom) = split(bytes)?;
    let mut it = sections.into_iter();
    let mut next = |id: u8| -> Result<(usize, &[u8]), SnapshotError> {
        match it.next() {
            Some((got, at, body)) if got == id => Ok((at, body)),
            Some((got, at, _)) => Err(damaged(format!(
                "expected the {} section at offset {at}, found the {} section (id {got})",
                section::name(id),
                section::name(got)
            ))),
            None => Err(damaged(format!("the {} section is missing", section::name(id)))),
        }
    };
    let meta: v1::Meta = body(next(section::META)?, section::META)?;
    let (_, vbc) = next(section::MODULE)?;
    let values: v1::Values = body(next(section::VALUES)?, section::VALUES)?;
    let actors: Vec<v1::Actor> = body(next(section::ACTORS)?, section::ACTORS)?;
    let channels: Vec<v1::Channel> = body(next(section::CHANNELS)?, section::CHANNELS)?;
    let tables: Vec<v1::Table> = body(next(section::TABLES)?, section::TABLES)?;
    let resources: Vec<v1::Resource> = body(next(section::RESOURCES)?, section::RESOURCES)?;
    if let Some((id, at, _)) = it.next() {
        return Err(damaged(format!("unexpected {} section (id {id}) at offset {at}", section::name(id))));
    }
    let hash = module_hash(vbc);
    if hash != meta.module_hash {
        return Err(damaged(format!(
            "the module section (hash {hash:016x}) is not the module this snapshot was taken with \
             (hash {:016x}): the file mixes parts of different snapshots",
            meta.module_hash
        )));
    }
    let (mut limits, mut rngs) = (Vec::new(), Vec::new());
    let mut raw_containers: Option<v1::Containers> = None;
    let (mut seen_limits, mut seen_rngs, mut seen_containers) = (false, false, false);
    for (id, at, b) in custom {
        let seen = match id {
            section::LIMITS => &mut seen_limits,
            section::RNG => &mut seen_rngs,
            section::CONTAINERS => &mut seen_containers,
            _ => continue,
        };
        if std::mem::replace(seen, true) {
            return Err(damaged(format!("a second {} section at offset {at}", section::name(id))));
        }
        match id {
            section::LIMITS => limits = body((at, b), id)?,
            section::RNG => rngs = body((at, b), id)?,
            _ => raw_containers = Some(body((at, b), id)?),
        }
    }
    let module = crate::load(vbc).map_err(SnapshotError::Module)?;
    let (mut containers, mut shared_channels) = (Vec::new(), Vec::new());
    if let Some(raw) = raw_containers {
        shared_channels = raw.shared_channels;
        for mut spec in raw.containers {
            let vbc = std::mem::take(&mut spec.module.0);
            let module = crate::load(&vbc).map_err(|e| {
                SnapshotError::State(format!("the module of container {:?} does not load: {e}", spec.name))
            })?;
            containers.push(ContainerImage { module: Arc::new(module), spec });
        }
    }
    let snapshot = Snapshot {
        meta,
        module: Arc::new(module),
        values,
        actors,
        channels,
        tables,
        resources,
        limits,
        rngs,
        containers,
        shared_channels,
    };
    super::check::check_loaded(&snapshot, bytes.len())?;
    Ok(snapshot)
}

/// A known section: its id, the offset of its header, its body.
type Section<'a> = (u8, usize, &'a [u8]);

/// Checks the container and returns the known sections in file order, without the end
/// section, and apart from them the custom sections this VM knows (others are skipped).
fn split(bytes: &[u8]) -> Result<(Vec<Section<'_>>, Vec<Section<'_>>), SnapshotError> {
    if !bytes.starts_with(&MAGIC) {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(damaged(format!("truncated header: the file has {} bytes", bytes.len())));
        }
        return Err(damaged("bad magic: not a VM snapshot".into()));
    }
    let Some(version) = bytes.get(MAGIC.len()..MAGIC.len() + 4) else {
        return Err(damaged(format!("truncated header: the file has {} bytes", bytes.len())));
    };
    let major = u16::from_le_bytes([version[0], version[1]]);
    let minor = u16::from_le_bytes([version[2], version[3]]);
    if major != VERSION_MAJOR {
        return Err(damaged(format!(
            "unsupported snapshot format version {major}.{minor} (this VM reads {VERSION_MAJOR}.x)"
        )));
    }
    let mut at = MAGIC.len() + 4;
    let mut out = Vec::new();
    let mut custom = Vec::new();
    loop {
        let Some(header) = bytes.get(at..at + HEADER) else {
            return Err(damaged(format!(
                "truncated file: it ends at offset {} without the end section (was a write \
                 interrupted?)",
                bytes.len()
            )));
        };
        let id = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        let start = at + HEADER;
        let Some(body) = bytes.get(start..start.saturating_add(len)) else {
            return Err(damaged(format!(
                "truncated {} section at offset {at}: its body is {len} bytes but only {} remain",
                section::name(id),
                bytes.len() - start.min(bytes.len())
            )));
        };
        if crc32fast::hash(body) != crc {
            return Err(damaged(format!(
                "checksum mismatch in the {} section at offset {at}: the file is corrupt",
                section::name(id)
            )));
        }
        if id == section::END {
            let whole = crc32fast::hash(&bytes[..at]);
            if body != whole.to_le_bytes() {
                return Err(damaged(format!(
                    "the end section at offset {at} does not match the bytes before it: the file \
                     is corrupt"
                )));
            }
            if start + len != bytes.len() {
                return Err(damaged(format!(
                    "{} bytes after the end section at offset {at}",
                    bytes.len() - start - len
                )));
            }
            return Ok((out, custom));
        }
        if id == section::LIMITS || id == section::RNG || id == section::CONTAINERS {
            custom.push((id, at, body));
        } else if id & section::CUSTOM == 0 {
            if id > section::RESOURCES {
                return Err(damaged(format!("unknown section id {id} at offset {at}")));
            }
            out.push((id, at, body));
        }
        at = start + len;
    }
}

/// Decodes one section's postcard body, which must use every byte.
fn body<T: DeserializeOwned>((at, bytes): (usize, &[u8]), id: u8) -> Result<T, SnapshotError> {
    let name = section::name(id);
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(damaged(format!(
            "{} unused bytes at the end of the {name} section at offset {at}",
            rest.len()
        ))),
        Err(e) => Err(damaged(format!("the {name} section at offset {at} does not decode: {e}"))),
    }
}

/// Recomputes every section checksum and the end section of a file whose framing is intact,
/// leaving everything else as it is. For the fuzz target and tests: damage made inside a
/// section body then reaches the body decoders and the state verifier instead of stopping at
/// the checksums. A file whose framing is broken is returned unchanged.
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.starts_with(&MAGIC) {
        return out;
    }
    let mut at = MAGIC.len() + 4;
    while let Some(header) = out.get(at..at + HEADER) {
        let id = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let start = at + HEADER;
        if start.saturating_add(len) > out.len() {
            break;
        }
        if id == section::END && len == 4 {
            let whole = crc32fast::hash(&out[..at]);
            out[start..start + 4].copy_from_slice(&whole.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[start..start + len]);
        out[at + 5..at + 9].copy_from_slice(&crc.to_le_bytes());
        if id == section::END {
            break;
        }
        at = start + len;
    }
    out
}
