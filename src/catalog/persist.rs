//! The last good catalog on disk, so a restart answers while the live source is unreachable.
//!
//! # Layout and format
//! `<state_dir>/catalog.json`: a versioned JSON document holding the plain [`CatalogData`]
//! (nodes, instances with their aggregate health, mesh endpoints), the local datacenter it was
//! synced for, when it was written (`saved_at`, Unix milliseconds) and a random `generation`
//! naming this write. Next to it, `catalog.json.confirmed`, a few bytes: the generation and
//! the last time a sync found the source unchanged. The times are data, not the files'
//! modification times, so a copied or restored-from-backup file does not look fresh. The model is persisted, not the prepared records: the
//! records depend on build options (TTLs, `only_passing`) that may change between runs, and
//! the model is the contract every backend already produces. Field names are our own, spelled
//! out in the private `disk` types below, so the in-memory model can change without breaking
//! old files. Version 1 (no times inside, written by earlier builds) still loads, its age
//! taken from the file's modification time as those builds did; any other `version` is
//! refused (and replaced by the next write).
//!
//! # State machine
//! - **Start-up** ([`restore`]): no file → nothing to restore (the daemon answers SERVFAIL in
//!   the domain until the first sync); a file that does not parse or validate → logged and
//!   ignored, same as no file; a good file → its age decides (`max_stale`), then it is built and
//!   published before the first sync completes.
//! - **Running** ([`persist`]): after a publish (debounced by the backend), the whole catalog
//!   is written to `catalog.json.tmp`, fsynced, renamed over `catalog.json`, and the directory
//!   fsynced: a crash leaves either the old file or the new one, never a torn one.
//! - **Confirmed** ([`confirm`]): a sync that finds nothing changed only rewrites the small
//!   confirmation file (same generation, a new time), since "age" means the time since the
//!   data was last known to match the source, not since it last changed. A confirmation of
//!   another generation (a crash between the two writes, a catalog copied without it) is
//!   ignored: the age is then the time since `saved_at`. A version 1 catalog (no confirmation
//!   file) is confirmed by its modification time, as earlier builds did, until it is rewritten.
//!
//! # Failure behaviour and limits
//! A failed write is counted and logged by the caller; the previous file stays, and serving is
//! never affected. Writes run off the async runtime (the caller uses `spawn_blocking`). The
//! file is rewritten whole: ~250 bytes per instance, so a 100,000-instance catalog is ~25 MB
//! and the backend debounces writes to at most one every few seconds.
//! TODO(perf): an append-only log of changes would avoid rewriting large catalogs.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::catalog::model::{CatalogData, ModelError};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "catalog.json";
/// The confirmation file's name inside the state directory.
pub const CONFIRMED_NAME: &str = "catalog.json.confirmed";
/// The format version this build writes and reads.
pub const VERSION: u32 = 2;
/// The version of earlier builds, still read (age from the file's modification time).
const VERSION_MTIME: u32 = 1;
const FORMAT: &str = "consul-dns catalog";

/// Why the on-disk snapshot could not be written or used.
#[derive(Debug, Error)]
pub enum PersistError {
    /// Reading, writing, renaming or syncing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a snapshot we can read.
    #[error("{path}: not a consul-dns catalog snapshot: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Written by another format version.
    #[error("{path}: format version {found}, this build reads versions {VERSION_MTIME} and {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The data does not validate.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The model error.
        source: ModelError,
    },
}

/// A snapshot read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// The catalog.
    pub data: CatalogData,
    /// The local datacenter it was synced for.
    pub datacenter: String,
    /// When the data was last known to match the source: the later of the time it was
    /// written and its last confirmation, both read from the files' contents.
    pub confirmed: SystemTime,
    /// The file is of version 1, which keeps no times: `confirmed` is its modification time.
    pub age_from_mtime: bool,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_owned(), source }
}

/// Writes `data` atomically as `<dir>/catalog.json` (temp file, fsync, rename, fsync dir),
/// saved now, then its confirmation file.
pub fn persist(dir: &Path, data: &CatalogData, datacenter: &str) -> Result<(), PersistError> {
    persist_at(dir, data, datacenter, SystemTime::now())
}

fn persist_at(dir: &Path, data: &CatalogData, datacenter: &str, now: SystemTime) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let generation = fastrand::u64(..);
    let doc = disk::Document::new(data, datacenter, unix_ms(now), generation);
    serde_json::to_writer(&mut out, &doc).map_err(|e| PersistError::Io { path: tmp.clone(), source: e.into() })?;
    out.flush().map_err(io_error(&tmp))?;
    let file = out.into_inner().map_err(|e| PersistError::Io { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    write_confirmation(dir, disk::Confirmation { generation, confirmed_at: unix_ms(now) })
}

/// Writes the confirmation file via a temporary sibling and a rename. Not fsynced: a lost
/// confirmation only makes the catalog look older than it is, never fresher.
fn write_confirmation(dir: &Path, confirmation: disk::Confirmation) -> Result<(), PersistError> {
    let path = dir.join(CONFIRMED_NAME);
    let tmp = dir.join(format!("{CONFIRMED_NAME}.tmp"));
    let text =
        serde_json::to_vec(&confirmation).map_err(|e| PersistError::Io { path: tmp.clone(), source: e.into() })?;
    fs::write(&tmp, text).map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))
}

/// The confirmation file, if there is one that decodes.
fn read_confirmation(dir: &Path) -> Option<disk::Confirmation> {
    let text = fs::read(dir.join(CONFIRMED_NAME)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Marks the catalog on disk as still matching the source, as of now. Without a confirmation
/// file (a version 1 catalog of an earlier build, not yet rewritten) it moves the catalog's
/// modification time instead, which is that version's age; a version 2 catalog ignores it.
pub fn confirm(dir: &Path) -> Result<(), PersistError> {
    confirm_at(dir, SystemTime::now())
}

fn confirm_at(dir: &Path, now: SystemTime) -> Result<(), PersistError> {
    let Some(confirmation) = read_confirmation(dir) else {
        let path = dir.join(FILE_NAME);
        let file = File::options().write(true).open(&path).map_err(io_error(&path))?;
        return file.set_modified(now).map_err(io_error(&path));
    };
    write_confirmation(dir, disk::Confirmation { confirmed_at: unix_ms(now), ..confirmation })
}

/// Reads `<dir>/catalog.json`; `Ok(None)` when there is none.
pub fn restore(dir: &Path) -> Result<Option<Restored>, PersistError> {
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PersistError::Io { path, source: e }),
    };
    let modified = file.metadata().and_then(|m| m.modified()).map_err(io_error(&path))?;
    let (data, datacenter, stamp) = decode_from(&path, BufReader::with_capacity(1 << 16, file))?;
    let (confirmed, age_from_mtime) = match stamp {
        Some((saved_at, generation)) => {
            let confirmation = read_confirmation(dir).filter(|c| c.generation == generation);
            let last = confirmation.map_or(saved_at, |c| c.confirmed_at.max(saved_at));
            (from_unix_ms(last), false)
        }
        None => (modified, true),
    };
    Ok(Some(Restored { data, datacenter, confirmed, age_from_mtime }))
}

/// Decodes the bytes of a state file (`path` names it in errors): the validated catalog and
/// the datacenter it was synced for.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<(CatalogData, String), PersistError> {
    decode_from(path, bytes).map(|(data, datacenter, _)| (data, datacenter))
}

/// The catalog, its datacenter, and (`saved_at`, `generation`) for a current file; `None`
/// for a version 1 file, whose age is its modification time.
type Decoded = (CatalogData, String, Option<(u64, u64)>);

fn decode_from(path: &Path, reader: impl io::Read) -> Result<Decoded, PersistError> {
    let decode = |message: String| PersistError::Decode { path: path.to_owned(), message };
    let doc: disk::Document = serde_json::from_reader(reader).map_err(|e| decode(e.to_string()))?;
    if doc.format != FORMAT {
        return Err(decode(format!("format {:?}", doc.format)));
    }
    let stamp = match (doc.version, doc.saved_at, doc.generation) {
        (VERSION, Some(saved_at), Some(generation)) => Some((saved_at, generation)),
        (VERSION, _, _) => return Err(decode("no saved_at or generation".into())),
        (VERSION_MTIME, _, _) => None,
        (found, _, _) => return Err(PersistError::Version { path: path.to_owned(), found }),
    };
    let datacenter = doc.datacenter.clone();
    let data = doc.into_model().map_err(decode)?;
    data.validate().map_err(|source| PersistError::Invalid { path: path.to_owned(), source })?;
    Ok((data, datacenter, stamp))
}

/// The on-disk shapes: our own names, independent of the in-memory model.
mod disk {
    use serde::{Deserialize, Serialize};

    use crate::catalog::model::{
        Address, CatalogData, Health, Instance, MeshEndpoint, MeshKind, Node, TaggedAddresses, Weights,
    };

    fn is_false(b: &bool) -> bool {
        !b
    }

    #[derive(Serialize, Deserialize)]
    pub struct Document {
        pub format: String,
        pub version: u32,
        pub datacenter: String,
        /// Unix milliseconds of the write (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub saved_at: Option<u64>,
        /// Names this write; the confirmation file must carry the same (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub generation: Option<u64>,
        pub nodes: Vec<DiskNode>,
        pub instances: Vec<DiskInstance>,
        #[serde(default)]
        pub mesh: Vec<DiskMesh>,
    }

    /// `catalog.json.confirmed`.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    pub struct Confirmation {
        pub generation: u64,
        /// Unix milliseconds of the last sync that found the source unchanged.
        pub confirmed_at: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct DiskNode {
        name: String,
        dc: String,
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv4: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv6: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        meta: Vec<(String, String)>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct DiskInstance {
        id: String,
        service: String,
        dc: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv4: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv6: Option<String>,
        port: u16,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        weights: (u16, u16),
        #[serde(default, skip_serializing_if = "is_false")]
        warning: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        critical: bool,
    }

    #[derive(Serialize, Deserialize)]
    pub struct DiskMesh {
        ingress: bool,
        service: String,
        instance: DiskInstance,
    }

    fn text(address: &Option<Address>) -> Option<String> {
        address.as_ref().map(ToString::to_string)
    }

    fn parse(text: Option<String>, what: &str) -> Result<Option<Address>, String> {
        match text {
            None => Ok(None),
            Some(t) => Address::parse(&t).map(Some).ok_or_else(|| format!("empty {what} address")),
        }
    }

    impl Document {
        pub fn new(data: &CatalogData, datacenter: &str, saved_at: u64, generation: u64) -> Document {
            Document {
                format: super::FORMAT.into(),
                version: super::VERSION,
                datacenter: datacenter.into(),
                saved_at: Some(saved_at),
                generation: Some(generation),
                nodes: data.nodes.iter().map(DiskNode::from).collect(),
                instances: data.instances.iter().map(DiskInstance::from).collect(),
                mesh: data
                    .mesh
                    .iter()
                    .map(|m| DiskMesh {
                        ingress: m.kind == MeshKind::Ingress,
                        service: m.service.clone(),
                        instance: DiskInstance::from(&m.instance),
                    })
                    .collect(),
            }
        }

        pub fn into_model(self) -> Result<CatalogData, String> {
            let nodes = self.nodes.into_iter().map(Node::try_from).collect::<Result<_, _>>()?;
            let instances = self.instances.into_iter().map(Instance::try_from).collect::<Result<_, _>>()?;
            let mesh = self
                .mesh
                .into_iter()
                .map(|m| {
                    let kind = if m.ingress { MeshKind::Ingress } else { MeshKind::Connect };
                    Ok(MeshEndpoint { kind, service: m.service, instance: Instance::try_from(m.instance)? })
                })
                .collect::<Result<_, String>>()?;
            Ok(CatalogData { nodes, instances, mesh })
        }
    }

    impl From<&Node> for DiskNode {
        fn from(node: &Node) -> DiskNode {
            DiskNode {
                name: node.name.clone(),
                dc: node.datacenter.clone(),
                address: node.address.to_string(),
                ipv4: text(&node.tagged.ipv4),
                ipv6: text(&node.tagged.ipv6),
                meta: node.meta.clone(),
            }
        }
    }

    impl TryFrom<DiskNode> for Node {
        type Error = String;
        fn try_from(node: DiskNode) -> Result<Node, String> {
            let address = Address::parse(&node.address).ok_or_else(|| format!("node {:?}: no address", node.name))?;
            let tagged = TaggedAddresses { ipv4: parse(node.ipv4, "lan_ipv4")?, ipv6: parse(node.ipv6, "lan_ipv6")? };
            Ok(Node { name: node.name, datacenter: node.dc, address, tagged, meta: node.meta })
        }
    }

    impl From<&Instance> for DiskInstance {
        fn from(inst: &Instance) -> DiskInstance {
            DiskInstance {
                id: inst.id.clone(),
                service: inst.service.clone(),
                dc: inst.datacenter.clone(),
                node: inst.node.clone(),
                address: text(&inst.address),
                ipv4: text(&inst.tagged.ipv4),
                ipv6: text(&inst.tagged.ipv6),
                port: inst.port,
                tags: inst.tags.iter().map(|tag| tag.to_string()).collect(),
                weights: (inst.weights.passing, inst.weights.warning),
                warning: inst.health == Health::Warning,
                critical: inst.health == Health::Critical,
            }
        }
    }

    impl TryFrom<DiskInstance> for Instance {
        type Error = String;
        fn try_from(inst: DiskInstance) -> Result<Instance, String> {
            let health = match (inst.critical, inst.warning) {
                (true, _) => Health::Critical,
                (false, true) => Health::Warning,
                (false, false) => Health::Passing,
            };
            Ok(Instance {
                id: inst.id,
                service: inst.service,
                datacenter: inst.dc,
                node: inst.node,
                address: parse(inst.address, "service")?,
                tagged: TaggedAddresses { ipv4: parse(inst.ipv4, "lan_ipv4")?, ipv6: parse(inst.ipv6, "lan_ipv6")? },
                port: inst.port,
                tags: crate::catalog::model::tags(inst.tags),
                weights: Weights { passing: inst.weights.0, warning: inst.weights.1 },
                health,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Address, Health, Instance, MeshEndpoint, MeshKind, Node, TaggedAddresses, Weights};

    fn sample() -> CatalogData {
        let node = Node {
            name: "node-a".into(),
            datacenter: "dc1".into(),
            address: Address::parse("10.0.0.1").unwrap(),
            tagged: TaggedAddresses { ipv4: Address::parse("10.9.0.1"), ipv6: None },
            meta: vec![("rack".into(), "r1".into())],
        };
        let web = Instance {
            id: "web-1".into(),
            service: "web".into(),
            datacenter: "dc1".into(),
            node: Some("node-a".into()),
            address: Address::parse("2001:db8::1"),
            tagged: TaggedAddresses::default(),
            port: 8080,
            tags: crate::catalog::model::tags(["v1"]),
            weights: Weights { passing: 10, warning: 0 },
            health: Health::Warning,
        };
        let proxy =
            Instance { id: "web-proxy".into(), service: "web-sidecar-proxy".into(), port: 21000, ..web.clone() };
        CatalogData {
            nodes: vec![node],
            instances: vec![web, proxy.clone()],
            mesh: vec![MeshEndpoint { kind: MeshKind::Connect, service: "web".into(), instance: proxy }],
        }
    }

    #[test]
    fn round_trips_the_model() {
        let dir = tempfile::tempdir().unwrap();
        assert!(restore(dir.path()).unwrap().is_none(), "no file: nothing to restore");
        persist(dir.path(), &sample(), "dc1").unwrap();
        let restored = restore(dir.path()).unwrap().unwrap();
        assert_eq!(restored.data, sample());
        assert_eq!(restored.datacenter, "dc1");
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists(), "temp file renamed away");
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Within a millisecond (the files keep milliseconds).
    fn close(a: SystemTime, b: SystemTime) -> bool {
        a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap() < Duration::from_millis(2)
    }

    #[test]
    fn confirm_moves_the_age_not_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - HOUR;
        persist_at(dir.path(), &sample(), "dc1", old).unwrap();
        let restored = restore(dir.path()).unwrap().unwrap();
        assert!(close(restored.confirmed, old) && !restored.age_from_mtime, "{:?}", restored.confirmed);
        let later = old + HOUR / 2;
        confirm_at(dir.path(), later).unwrap();
        let restored = restore(dir.path()).unwrap().unwrap();
        assert!(close(restored.confirmed, later), "{:?}", restored.confirmed);
        assert_eq!(restored.data, sample());
    }

    #[test]
    fn a_copied_file_keeps_its_age() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = SystemTime::now() - HOUR;
        persist_at(from.path(), &sample(), "dc1", old).unwrap();
        confirm_at(from.path(), old + HOUR / 4).unwrap();
        // Copied alone (its modification time is now): as old as its write.
        fs::copy(from.path().join(FILE_NAME), to.path().join(FILE_NAME)).unwrap();
        assert!(close(restore(to.path()).unwrap().unwrap().confirmed, old));
        // Copied with its confirmation: as old as that.
        fs::copy(from.path().join(CONFIRMED_NAME), to.path().join(CONFIRMED_NAME)).unwrap();
        assert!(close(restore(to.path()).unwrap().unwrap().confirmed, old + HOUR / 4));
        // A confirmation of another write (a newer catalog's) does not count for this one.
        let newer = tempfile::tempdir().unwrap();
        persist(newer.path(), &sample(), "dc1").unwrap();
        fs::copy(newer.path().join(CONFIRMED_NAME), to.path().join(CONFIRMED_NAME)).unwrap();
        assert!(close(restore(to.path()).unwrap().unwrap().confirmed, old), "another generation's confirmation");
        // No confirmation file: confirming moves only the modification time, which a version 2
        // catalog does not go by.
        fs::remove_file(to.path().join(CONFIRMED_NAME)).unwrap();
        confirm(to.path()).unwrap();
        assert!(close(restore(to.path()).unwrap().unwrap().confirmed, old));
    }

    #[test]
    fn a_version_1_file_still_loads_with_its_modification_time_as_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let v1 = r#"{"format":"consul-dns catalog","version":1,"datacenter":"dc1","nodes":[],
            "instances":[{"id":"a","service":"web","dc":"dc1","address":"10.0.0.9","port":1,"weights":[1,1]}]}"#;
        fs::write(&path, v1).unwrap();
        let old = SystemTime::now() - HOUR;
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        let restored = restore(dir.path()).unwrap().unwrap();
        assert!(restored.age_from_mtime);
        assert!(close(restored.confirmed, old));
        assert_eq!(restored.data.instances.len(), 1);
        let later = old + HOUR / 2;
        confirm_at(dir.path(), later).unwrap();
        assert!(close(restore(dir.path()).unwrap().unwrap().confirmed, later), "confirmed as earlier builds did");
        let v2_without_time = v1.replace("\"version\":1", "\"version\":2");
        fs::write(&path, v2_without_time).unwrap();
        let refused = restore(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("no saved_at"), "{refused}");
    }

    #[test]
    fn refuses_garbage_other_versions_and_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "{\"format\": \"consul-dns catalog\", \"vers").unwrap();
        assert!(matches!(restore(dir.path()), Err(PersistError::Decode { .. })));
        let other = r#"{"format":"consul-dns catalog","version":99,"datacenter":"dc1","nodes":[],"instances":[]}"#;
        fs::write(&path, other).unwrap();
        let refused = restore(dir.path()).unwrap_err();
        assert!(matches!(refused, PersistError::Version { found: 99, .. }));
        assert!(refused.to_string().ends_with("format version 99, this build reads versions 1 and 2"), "{refused}");
        let orphan = r#"{"format":"consul-dns catalog","version":1,"datacenter":"dc1","nodes":[],
            "instances":[{"id":"a","service":"web","dc":"dc1","node":"ghost","port":1,"weights":[1,1]}]}"#;
        fs::write(&path, orphan).unwrap();
        assert!(matches!(restore(dir.path()), Err(PersistError::Invalid { .. })));
    }
}
