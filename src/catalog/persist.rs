//! The last good catalog on disk, so a restart answers while the live source is unreachable.
//!
//! # Layout and format
//! One file, `<state_dir>/catalog.json`: a versioned JSON document holding the plain
//! [`CatalogData`] (nodes, instances with their aggregate health, mesh endpoints) and the
//! local datacenter it was synced for. The model is persisted, not the prepared records: the
//! records depend on build options (TTLs, `only_passing`) that may change between runs, and
//! the model is the contract every backend already produces. Field names are our own, spelled
//! out in the private `disk` types below, so the in-memory model can change without breaking
//! old files; a file of another `version` is refused (and replaced by the next write).
//!
//! # State machine
//! - **Start-up** ([`restore`]): no file → nothing to restore (the daemon answers SERVFAIL in
//!   the domain until the first sync); a file that does not parse or validate → logged and
//!   ignored, same as no file; a good file → its age decides (`max_stale`), then it is built and
//!   published before the first sync completes.
//! - **Running** ([`persist`]): after a publish (debounced by the backend), the whole catalog
//!   is written to `catalog.json.tmp`, fsynced, renamed over `catalog.json`, and the directory
//!   fsynced: a crash leaves either the old file or the new one, never a torn one.
//! - **Confirmed** ([`confirm`]): a sync that finds nothing changed only moves the file's
//!   modification time, which is what "age" means: the time since the data was last known to
//!   match the source, not since it last changed.
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
use std::time::SystemTime;

use thiserror::Error;

use crate::catalog::model::{CatalogData, ModelError};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "catalog.json";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
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
    #[error("{path}: format version {found}, this build reads version {VERSION}")]
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
    /// When the data was last known to match the source (the file's modification time).
    pub confirmed: SystemTime,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_owned(), source }
}

/// Writes `data` atomically as `<dir>/catalog.json` (temp file, fsync, rename, fsync dir).
pub fn persist(dir: &Path, data: &CatalogData, datacenter: &str) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let doc = disk::Document::new(data, datacenter);
    serde_json::to_writer(&mut out, &doc).map_err(|e| PersistError::Io { path: tmp.clone(), source: e.into() })?;
    out.flush().map_err(io_error(&tmp))?;
    let file = out.into_inner().map_err(|e| PersistError::Io { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Marks the file as still matching the source: sets its modification time to now.
pub fn confirm(dir: &Path) -> Result<(), PersistError> {
    let path = dir.join(FILE_NAME);
    let file = File::options().write(true).open(&path).map_err(io_error(&path))?;
    file.set_modified(SystemTime::now()).map_err(io_error(&path))
}

/// Reads `<dir>/catalog.json`; `Ok(None)` when there is none.
pub fn restore(dir: &Path) -> Result<Option<Restored>, PersistError> {
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PersistError::Io { path, source: e }),
    };
    let confirmed = file.metadata().and_then(|m| m.modified()).map_err(io_error(&path))?;
    let (data, datacenter) = decode_from(&path, BufReader::with_capacity(1 << 16, file))?;
    Ok(Some(Restored { data, datacenter, confirmed }))
}

/// Decodes the bytes of a state file (`path` names it in errors): the validated catalog and
/// the datacenter it was synced for.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<(CatalogData, String), PersistError> {
    decode_from(path, bytes)
}

fn decode_from(path: &Path, reader: impl io::Read) -> Result<(CatalogData, String), PersistError> {
    let decode = |message: String| PersistError::Decode { path: path.to_owned(), message };
    let doc: disk::Document = serde_json::from_reader(reader).map_err(|e| decode(e.to_string()))?;
    if doc.format != FORMAT {
        return Err(decode(format!("format {:?}", doc.format)));
    }
    if doc.version != VERSION {
        return Err(PersistError::Version { path: path.to_owned(), found: doc.version });
    }
    let datacenter = doc.datacenter.clone();
    let data = doc.into_model().map_err(decode)?;
    data.validate().map_err(|source| PersistError::Invalid { path: path.to_owned(), source })?;
    Ok((data, datacenter))
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
        pub nodes: Vec<DiskNode>,
        pub instances: Vec<DiskInstance>,
        #[serde(default)]
        pub mesh: Vec<DiskMesh>,
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
        pub fn new(data: &CatalogData, datacenter: &str) -> Document {
            Document {
                format: super::FORMAT.into(),
                version: super::VERSION,
                datacenter: datacenter.into(),
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
                tags: inst.tags.clone(),
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
                tags: inst.tags,
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
            tags: vec!["v1".into()],
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

    #[test]
    fn confirm_moves_the_age_not_the_data() {
        let dir = tempfile::tempdir().unwrap();
        persist(dir.path(), &sample(), "dc1").unwrap();
        let file = File::options().write(true).open(dir.path().join(FILE_NAME)).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        file.set_modified(old).unwrap();
        assert!(restore(dir.path()).unwrap().unwrap().confirmed <= old);
        confirm(dir.path()).unwrap();
        let restored = restore(dir.path()).unwrap().unwrap();
        assert!(restored.confirmed > old);
        assert_eq!(restored.data, sample());
    }

    #[test]
    fn refuses_garbage_other_versions_and_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "{\"format\": \"consul-dns catalog\", \"vers").unwrap();
        assert!(matches!(restore(dir.path()), Err(PersistError::Decode { .. })));
        let other = r#"{"format":"consul-dns catalog","version":99,"datacenter":"dc1","nodes":[],"instances":[]}"#;
        fs::write(&path, other).unwrap();
        assert!(matches!(restore(dir.path()), Err(PersistError::Version { found: 99, .. })));
        let orphan = r#"{"format":"consul-dns catalog","version":1,"datacenter":"dc1","nodes":[],
            "instances":[{"id":"a","service":"web","dc":"dc1","node":"ghost","port":1,"weights":[1,1]}]}"#;
        fs::write(&path, orphan).unwrap();
        assert!(matches!(restore(dir.path()), Err(PersistError::Invalid { .. })));
    }
}
