//! The static catalog file format (TOML, or JSON for `*.json`) and its conversion into
//! [`CatalogData`]. Every error names the file and, for TOML, the line; JSON errors name the
//! line for syntax and the entry for meaning.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

/// A set with a fast hasher: every name of the catalog goes through these.
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::backend::failure::Failure;
use crate::catalog::model::{
    Address, CatalogData, Health, Instance, ModelError, Node, TaggedAddresses, Weights, is_dns_label, is_dns_name,
    lower,
};
use crate::config::locate;

use super::split;

/// Why a catalog file was rejected.
#[derive(Debug, Error)]
pub enum CatalogFileError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (said in the message, so not a `source` that would be said twice).
        error: std::io::Error,
    },
    /// Syntax, unknown key, or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}\n    {line_text}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// The offending line.
        line_text: String,
    },
    /// A file with nothing in it: most likely caught in the middle of a write.
    #[error(
        "catalog {path} is empty; an empty catalog is never served (write the new file elsewhere and rename it into place)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// An entry that parses but cannot be served.
    #[error("{path}:{location}: {message}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// `line N` (TOML) or `services[3]` (JSON).
        location: String,
        /// What is wrong.
        message: String,
    },
}

impl CatalogFileError {
    /// Why, in the vocabulary every source counts failures by.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            CatalogFileError::Read { .. } => Failure::Read,
            CatalogFileError::Syntax { .. } => Failure::Parse,
            CatalogFileError::Empty { .. } => Failure::Empty,
            CatalogFileError::Entry { .. } => Failure::Invalid,
        }
    }
}

/// A name field that may know where it was written (TOML) or not (JSON).
trait Located: DeserializeOwned {
    fn text(&self) -> &str;
    fn span(&self) -> Option<Range<usize>>;
}

impl Located for String {
    fn text(&self) -> &str {
        self
    }
    fn span(&self) -> Option<Range<usize>> {
        None
    }
}

impl Located for toml::Spanned<String> {
    fn text(&self) -> &str {
        self.get_ref()
    }
    fn span(&self) -> Option<Range<usize>> {
        Some(self.span())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "N: DeserializeOwned"))]
struct FileCatalog<N> {
    datacenter: Option<String>,
    #[serde(default)]
    nodes: Vec<FileNode<N>>,
    #[serde(default)]
    services: Vec<FileService<N>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "N: DeserializeOwned"))]
struct FileNode<N> {
    name: N,
    address: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "N: DeserializeOwned"))]
struct FileService<N> {
    name: N,
    port: u16,
    id: Option<String>,
    node: Option<String>,
    address: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    weights: Option<FileWeights>,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    #[allow(dead_code)] // accepted for parity with Consul registrations; DNS never answers it
    meta: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWeights {
    passing: u16,
    warning: u16,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum FileHealth {
    #[default]
    Passing,
    Warning,
    Critical,
}

/// Converts catalog text; the format follows the file name (`.json` or TOML).
pub fn parse(path: &Path, text: &str, default_dc: &str) -> Result<CatalogData, CatalogFileError> {
    if text.trim().is_empty() {
        return Err(CatalogFileError::Empty { path: path.to_owned() });
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        if let Some(data) = parse_json_in_parallel(text, default_dc) {
            return Ok(data);
        }
        let file: FileCatalog<String> = serde_json::from_str(text).map_err(|e| {
            let offset = text.lines().take(e.line().saturating_sub(1)).map(|l| l.len() + 1).sum::<usize>()
                + e.column().saturating_sub(1);
            syntax(path, text, offset, e.to_string())
        })?;
        convert(path, text, file, default_dc)
    } else {
        let file: FileCatalog<toml::Spanned<String>> = toml::from_str(text)
            .map_err(|e| syntax(path, text, e.span().map_or(0, |s| s.start), e.message().trim().to_owned()))?;
        convert(path, text, file, default_dc)
    }
}

/// A JSON string of the fast path: borrowed from the file's text unless it has escapes.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Text<'_> {
    fn into_string(self) -> String {
        self.0.into_owned()
    }
}

/// A node entry of the fast path: [`FileNode`] with borrowed strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireNode<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    address: Text<'a>,
    #[serde(default, borrow)]
    meta: BTreeMap<Text<'a>, Text<'a>>,
}

/// A service entry of the fast path: [`FileService`] with borrowed strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireService<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    port: u16,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    node: Option<Text<'a>>,
    #[serde(borrow)]
    address: Option<Text<'a>>,
    #[serde(default)]
    tags: Vec<String>,
    weights: Option<FileWeights>,
    #[serde(default)]
    health: FileHealth,
    #[serde(default, borrow)]
    #[allow(dead_code)] // checked as in `FileService`; DNS never answers it
    meta: BTreeMap<Text<'a>, Text<'a>>,
}

/// The fast path for JSON: the entries parsed and converted on two threads, each taking about
/// half of the text (the nodes and the last services on one, the first services on the
/// other), one entry at a time, with strings borrowed from the text until the model takes
/// them. `None` for anything unusual or wrong; the caller then parses the ordinary way, which
/// finds and words the error (so a bad file costs one more parse, a good one about half).
fn parse_json_in_parallel(text: &str, default_dc: &str) -> Option<CatalogData> {
    let (mut datacenter, mut nodes, mut services) = (None, None, None);
    for member in split::members(text)? {
        let taken = match member.key {
            "datacenter" => datacenter.replace(member.value).is_some(),
            // Not an array: the ordinary parse says why not.
            "nodes" => nodes.replace(member.items?).is_some(),
            "services" => services.replace(member.items?).is_some(),
            _ => return None,
        };
        if taken {
            return None;
        }
    }
    let datacenter = match datacenter {
        Some(value) => serde_json::from_str::<Option<String>>(value).ok()?,
        None => None,
    }
    .unwrap_or_else(|| default_dc.to_owned());
    if !is_dns_label(&datacenter) {
        return None;
    }
    let (nodes, services) = (nodes.unwrap_or_default(), services.unwrap_or_default());
    let half = (nodes.iter().chain(&services).map(|item| item.len()).sum::<usize>()) / 2;
    let mut taken = 0;
    let first = services.iter().position(|item| {
        taken += item.len();
        taken > half
    });
    let first = first.unwrap_or(services.len());
    let (first_services, last_services) = services.split_at(first);
    let datacenter = &datacenter;
    let (nodes, instances) = std::thread::scope(|scope| {
        let second = scope.spawn(move || {
            let mut converted = Vec::with_capacity(nodes.len());
            for item in &nodes {
                converted.push(json_node(item, datacenter)?);
            }
            let nodes = converted;
            let instances = json_services(last_services, datacenter, Vec::with_capacity(last_services.len()))?;
            Some((nodes, instances))
        });
        let instances = json_services(first_services, datacenter, Vec::with_capacity(services.len()));
        let (nodes, last) = second.join().ok().flatten()?;
        let mut instances = instances?;
        instances.extend(last);
        Some((nodes, instances))
    })?;
    let unique = std::thread::scope(|scope| {
        let nodes_ok = scope.spawn(|| {
            let mut names: FastSet<Cow<'_, str>> = FastSet::default();
            names.reserve(nodes.len());
            nodes.iter().all(|node| names.insert(lower(&node.name)))
                && instances.iter().all(|i| i.node.as_deref().is_none_or(|n| names.contains(&*lower(n))))
        });
        let mut ids: FastSet<(Cow<'_, str>, &str)> = FastSet::default();
        ids.reserve(instances.len());
        let ids_ok = instances.iter().all(|i| ids.insert((lower(i.node.as_deref().unwrap_or("")), i.id.as_str())));
        ids_ok && nodes_ok.join().unwrap_or(false)
    });
    if !unique {
        return None;
    }
    let data = CatalogData { nodes, instances, mesh: Vec::new() };
    debug_assert_eq!(data.validate(), Ok(()));
    Some(data)
}

/// One node entry of the fast path.
fn json_node(item: &str, datacenter: &str) -> Option<Node> {
    let entry: WireNode<'_> = serde_json::from_str(item).ok()?;
    let meta = entry.meta.into_iter().map(|(k, v)| (k.into_string(), v.into_string()));
    convert_node(entry.name.into_string(), &entry.address.0, meta, datacenter).ok()
}

/// The service entries `items` of the fast path, converted onto the end of `instances`.
fn json_services(items: &[&str], datacenter: &str, mut instances: Vec<Instance>) -> Option<Vec<Instance>> {
    for item in items {
        let entry: WireService<'_> = serde_json::from_str(item).ok()?;
        let fields = ServiceFields {
            port: entry.port,
            id: entry.id.map(Text::into_string),
            node: entry.node.map(Text::into_string),
            address: entry.address.as_ref().map(|a| &*a.0),
            tags: entry.tags,
            weights: entry.weights,
            health: entry.health,
        };
        instances.push(convert_service_fields(entry.name.into_string(), fields, datacenter, None).ok()?);
    }
    Some(instances)
}

fn syntax(path: &Path, text: &str, offset: usize, message: String) -> CatalogFileError {
    let (line, column, line_text) = locate(text, offset);
    CatalogFileError::Syntax { path: path.to_owned(), line, column, message, line_text }
}

fn convert<N: Located>(
    path: &Path,
    text: &str,
    file: FileCatalog<N>,
    default_dc: &str,
) -> Result<CatalogData, CatalogFileError> {
    let entry_error = |kind: &str, index: usize, name: &N, message: String| CatalogFileError::Entry {
        path: path.to_owned(),
        location: match name.span() {
            Some(span) => format!("line {}", locate(text, span.start).0),
            None => format!("{kind}[{index}] ({:?})", name.text()),
        },
        message,
    };
    let datacenter = file.datacenter.unwrap_or_else(|| default_dc.to_owned());
    if !is_dns_label(&datacenter) {
        let message = ModelError::InvalidDatacenter(datacenter).to_string();
        return Err(CatalogFileError::Entry { path: path.to_owned(), location: "datacenter".into(), message });
    }
    let mut data = CatalogData {
        nodes: Vec::with_capacity(file.nodes.len()),
        instances: Vec::with_capacity(file.services.len()),
        mesh: Vec::new(),
    };
    let mut node_names: FastSet<String> = FastSet::default();
    for (i, entry) in file.nodes.into_iter().enumerate() {
        if !node_names.insert(lower(entry.name.text()).into_owned()) {
            let message = format!("node {:?} is defined twice", entry.name.text());
            return Err(entry_error("nodes", i, &entry.name, message));
        }
        let name = entry.name.text().to_owned();
        let node = convert_node(name, &entry.address, entry.meta, &datacenter)
            .map_err(|m| entry_error("nodes", i, &entry.name, m))?;
        data.nodes.push(node);
    }
    let mut ids: FastSet<(String, String)> = FastSet::default();
    for (i, entry) in file.services.into_iter().enumerate() {
        let (located, inst) = convert_service(entry, &datacenter, Some(&node_names));
        let error = |m| entry_error("services", i, &located, m);
        let inst = inst.map_err(error)?;
        let node_key = lower(inst.node.as_deref().unwrap_or("")).into_owned();
        if !ids.insert((node_key, inst.id.clone())) {
            return Err(error(format!("id {:?} is used twice on one node", inst.id)));
        }
        data.instances.push(inst);
    }
    // The checks above are the model's rules with file positions attached; a debug build
    // proves they have not drifted apart (a release build does not pay for them twice).
    debug_assert_eq!(data.validate(), Ok(()));
    Ok(data)
}

fn convert_node(
    name: String,
    address: &str,
    meta: impl IntoIterator<Item = (String, String)>,
    datacenter: &str,
) -> Result<Node, String> {
    if !is_dns_name(&name) {
        return Err(ModelError::InvalidNodeName(name).to_string());
    }
    let address = Address::check(address).map_err(|e| format!("node {name:?}: {e}"))?;
    Ok(Node {
        name,
        datacenter: datacenter.to_owned(),
        address,
        tagged: TaggedAddresses::default(),
        meta: meta.into_iter().collect(),
    })
}

/// Converts one service entry; gives its name back for locating errors. `nodes`: the node
/// names defined (lower case), checked unless `None` (the caller then checks them).
fn convert_service<N: Located>(
    entry: FileService<N>,
    datacenter: &str,
    nodes: Option<&FastSet<String>>,
) -> (N, Result<Instance, String>) {
    let FileService { name: located, port, id, node, address, tags, weights, health, meta: _ } = entry;
    let name = located.text().to_owned();
    let fields = ServiceFields { port, id, node, address: address.as_deref(), tags, weights, health };
    (located, convert_service_fields(name, fields, datacenter, nodes))
}

/// A service entry but for its name.
struct ServiceFields<'a> {
    port: u16,
    id: Option<String>,
    node: Option<String>,
    address: Option<&'a str>,
    tags: Vec<String>,
    weights: Option<FileWeights>,
    health: FileHealth,
}

fn convert_service_fields(
    name: String,
    entry: ServiceFields<'_>,
    datacenter: &str,
    nodes: Option<&FastSet<String>>,
) -> Result<Instance, String> {
    if !is_dns_label(&name) {
        return Err(ModelError::InvalidServiceName(name).to_string());
    }
    if let Some(node) = &entry.node
        && let Some(nodes) = nodes
        && !nodes.contains(&*lower(node))
    {
        return Err(format!("service {name:?}: node {node:?} is not defined in [[nodes]]"));
    }
    let address = match entry.address {
        Some(text) => Some(Address::check(text).map_err(|e| format!("service {name:?}: {e}"))?),
        None if entry.node.is_none() => return Err(format!("service {name:?}: needs a node or an address")),
        None => None,
    };
    let weights = match &entry.weights {
        Some(w) if w.passing == 0 => return Err(format!("service {name:?}: weights.passing must be 1..=65535")),
        Some(w) => Weights { passing: w.passing, warning: w.warning },
        None => Weights::default(),
    };
    Ok(Instance {
        id: entry.id.unwrap_or_else(|| name.clone()),
        service: name,
        datacenter: datacenter.to_owned(),
        node: entry.node,
        address,
        tagged: TaggedAddresses::default(),
        port: entry.port,
        tags: crate::catalog::model::tags(entry.tags),
        weights,
        health: match entry.health {
            FileHealth::Passing => Health::Passing,
            FileHealth::Warning => Health::Warning,
            FileHealth::Critical => Health::Critical,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<CatalogData, CatalogFileError> {
        parse(Path::new("c.toml"), text, "dc1")
    }

    #[test]
    fn shipped_catalog_parses() {
        let data =
            parse(Path::new("config/services.toml"), &std::fs::read_to_string("config/services.toml").unwrap(), "dc1")
                .unwrap();
        let services: HashSet<&str> = data.instances.iter().map(|i| i.service.as_str()).collect();
        assert!(services.contains("user") && services.contains("order"));
        assert_eq!(data.instances.iter().filter(|i| i.service == "user").count(), 2);
        assert!(data.instances.iter().any(|i| i.address.is_some()), "one instance has its own address");
        assert!(data.instances.iter().any(|i| !i.tags.is_empty()), "one instance has tags");
        assert!(data.nodes.iter().all(|n| n.address.to_string().starts_with("127.")));
    }

    #[test]
    fn json_form_matches_toml_form() {
        let from_toml = toml("[[nodes]]\nname = \"n1\"\naddress = \"10.0.0.1\"\n[[services]]\nname = \"web\"\nnode = \"n1\"\nport = 80\ntags = [\"a\"]\n").unwrap();
        let json = r#"{"nodes":[{"name":"n1","address":"10.0.0.1"}],"services":[{"name":"web","node":"n1","port":80,"tags":["a"]}]}"#;
        assert_eq!(parse(Path::new("c.json"), json, "dc1").unwrap(), from_toml);
    }

    #[test]
    fn json_read_on_two_threads_matches_toml_in_every_field() {
        let from_toml = toml(concat!(
            "datacenter = \"east\"\n",
            "[[nodes]]\nname = \"n1\"\naddress = \"10.0.0.1\"\nmeta = { rack = \"r1\" }\n",
            "[[nodes]]\nname = \"n2\"\naddress = \"db.example.com\"\n",
            "[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"N1\"\nport = 80\ntags = [\"a\", \"b\"]\n",
            "weights = { passing = 3, warning = 1 }\nhealth = \"warning\"\nmeta = { v = \"1\" }\n",
            "[[services]]\nname = \"api\"\naddress = \"10.0.9.1\"\nport = 81\nhealth = \"critical\"\n",
            "[[services]]\nname = \"db\"\nnode = \"n2\"\nport = 5432\n",
        ))
        .unwrap();
        let json = r#"{"nodes": [{"name": "n1", "address": "10.0.0.1", "meta": {"rack": "r1"}},
            {"name": "n2", "address": "db.example.com"}], "datacenter": "east",
            "services": [{"name": "web", "id": "web-1", "node": "N1", "port": 80, "tags": ["a", "b"],
            "weights": {"passing": 3, "warning": 1}, "health": "warning", "meta": {"v": "1"}},
            {"name": "api", "address": "10.0.9.1", "port": 81, "health": "critical"},
            {"name": "db", "node": "n2", "port": 5432}]}"#;
        assert!(parse_json_in_parallel(json, "dc1").is_some(), "a plain file takes the fast path");
        assert_eq!(parse(Path::new("c.json"), json, "dc1").unwrap(), from_toml);
    }

    #[test]
    fn json_errors_are_the_same_whichever_path_finds_them() {
        let cases = [
            (r#"{"nodes": [{"name": "n", "address": "1.1.1.1"}, {"name": "N", "address": "1.1.1.2"}]}"#, "nodes[1]"),
            (
                r#"{"services": [{"name": "web", "port": 1, "address": "1.1.1.1"}, {"name": "web", "port": 2, "address": "1.1.1.2"}]}"#,
                "services[1]",
            ),
            (r#"{"services": [{"name": "web", "port": 1, "node": "x"}], "nodes": []}"#, "not defined"),
            (r#"{"datacenter": "a b"}"#, "datacenter"),
            (r#"{"nodes": [], "nodes": []}"#, "duplicate field"),
            (r#"{"services": [{"name": "web", "port": 70000, "address": "1.1.1.1"}]}"#, "c.json:1:"),
        ];
        for (json, what) in cases {
            assert!(parse_json_in_parallel(json, "dc1").is_none(), "{json}");
            let err = parse(Path::new("c.json"), json, "dc1").unwrap_err().to_string();
            assert!(err.contains(what), "{json} → {err}");
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            ("[[nodes]]\nname = \"n1\"\nadress = \"10.0.0.1\"\n", "line 3", "adress"),
            ("[[services]]\nname = \"web\"\nport = 80\nnode = \"nope\"\n", "line 2", "not defined"),
            ("[[services]]\nname = \"web\"\nport = 99999\naddress = \"1.2.3.4\"\n", "line 3", "port"),
            ("[[services]]\nname = \"web\"\nport = 80\n", "line 2", "needs a node or an address"),
            ("[[services]]\nname = \"web\"\nport = 80\naddress = \"1.2.3.4\"\nhealth = \"sick\"\n", "line 5", "sick"),
            ("[[nodes]]\nname = \"a b\"\naddress = \"1.2.3.4\"\n", "line 2", "name must be"),
            ("[[nodes]]\nname = \"n\"\naddress = \"999.1.1.1\"\n", "line 2", "\"999.1.1.1\" looks like an IP"),
            ("[[services]]\nname = \"web\"\nport = 80\naddress = \"10.0.0\"\n", "line 2", "is not one"),
            (
                "\n[[nodes]]\nname = \"n\"\naddress = \"1.1.1.1\"\n[[nodes]]\nname = \"N\"\naddress = \"1.1.1.2\"\n",
                "line 6",
                "twice",
            ),
        ];
        for (text, where_, what) in cases {
            let err = toml(text).unwrap_err().to_string();
            let line_ok =
                err.contains(&format!("c.toml:{}:", &where_[5..])) || err.contains(&format!("c.toml:{where_}"));
            assert!(line_ok, "{text:?} → {err}");
            assert!(err.contains(what), "{text:?} → {err}");
        }
    }

    #[test]
    fn json_errors_name_line_or_entry() {
        let err = parse(Path::new("c.json"), "{\n\"nodes\": [\n{\"name\": \"n\", \"bogus\": 1}]}", "dc1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json:3:") && err.contains("bogus"), "{err}");
        let err = parse(Path::new("c.json"), r#"{"services":[{"name":"web","port":1,"node":"x"}]}"#, "dc1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("services[0]") && err.contains("not defined"), "{err}");
    }

    /// Found by the `static_catalog` fuzz target (see `config::locate`).
    #[test]
    fn a_catalog_with_a_multibyte_character_at_its_error_is_rejected_not_a_panic() {
        let error = parse(std::path::Path::new("c.toml"), "\"\u{75f}", "dc1").unwrap_err();
        assert!(error.to_string().contains("c.toml"), "{error}");
        let json = parse(std::path::Path::new("c.json"), "\"\u{75f}", "dc1").unwrap_err();
        assert!(json.to_string().contains("c.json"), "{json}");
    }
}
