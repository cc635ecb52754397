//! Raw access to a location's objects, bypassing ferry: listing, reading and rewriting objects
//! (to inspect or damage a repository), and watching for the first object under a prefix.
//! For the servers it runs `rawstore.py`; for `file://` it uses the file system.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::harness::s;

const RAWSTORE_PY: &str = include_str!("rawstore.py");

/// A repository location: its store URL for ferry and direct access for the test.
pub struct Location {
    pub url: String,
    pub raw: RawStore,
}

impl Drop for Location {
    /// A passing test removes its objects from the servers; a failing one leaves them to look at.
    fn drop(&mut self) {
        if !thread::panicking() {
            self.raw.clear();
        }
    }
}

/// One object under a location, keyed relative to the location's prefix.
#[derive(Clone, Debug)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

impl Object {
    /// The last `/`-separated segment of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Direct access to a location's objects, not through ferry.
pub enum RawStore {
    Dir(PathBuf),
    /// S3 (moto), Azure Blob (Azurite) or GCS (fake-gcs-server), reached through `rawstore.py`.
    Server {
        kind: &'static str,
        endpoint: String,
        bucket: String,
        prefix: String,
    },
}

impl RawStore {
    /// The objects whose key (relative to the location) starts with `sub`, sorted by key.
    pub fn list(&self, sub: &str) -> Vec<Object> {
        let mut out = match self {
            RawStore::Dir(root) => {
                let mut out = Vec::new();
                list_dir(root, root, &mut out);
                out.retain(|o| o.key.starts_with(sub));
                out
            }
            RawStore::Server { prefix, .. } => {
                let listing = self.python(&["list", &format!("{prefix}/{sub}")], None);
                String::from_utf8(listing)
                    .expect("listing is UTF-8")
                    .lines()
                    .map(|line| {
                        let (size, key) = line.split_once(' ').expect("SIZE KEY line");
                        Object {
                            key: key
                                .strip_prefix(&format!("{prefix}/"))
                                .expect("key under the prefix")
                                .to_string(),
                            size: size.parse().expect("numeric size"),
                        }
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        match self {
            RawStore::Dir(root) => fs::read(root.join(key)).expect("read object file"),
            RawStore::Server { prefix, .. } => {
                self.python(&["get", &format!("{prefix}/{key}")], None)
            }
        }
    }

    /// The bytes of each of `keys`, in order (one process for the servers).
    pub fn get_many(&self, keys: &[String]) -> Vec<Vec<u8>> {
        match self {
            RawStore::Dir(_) => keys.iter().map(|k| self.get(k)).collect(),
            RawStore::Server { prefix, .. } => {
                if keys.is_empty() {
                    return Vec::new();
                }
                let full: Vec<String> = keys.iter().map(|k| format!("{prefix}/{k}")).collect();
                let mut args = vec!["getmany"];
                args.extend(full.iter().map(String::as_str));
                let out = self.python(&args, None);
                let mut rest = &out[..];
                let mut bodies = Vec::new();
                while !rest.is_empty() {
                    let eol = rest.iter().position(|&b| b == b'\n').expect("SIZE line");
                    let size: usize = std::str::from_utf8(&rest[..eol])
                        .expect("UTF-8 size")
                        .parse()
                        .expect("numeric size");
                    bodies.push(rest[eol + 1..eol + 1 + size].to_vec());
                    rest = &rest[eol + 1 + size..];
                }
                assert_eq!(bodies.len(), keys.len(), "rawstore.py getmany lost objects");
                bodies
            }
        }
    }

    /// Replaces a server object with `data` but gives it ferry mirror's BLAKE3 metadata
    /// `blake3_hex` (a forgery only reading the bytes can expose).
    pub fn forge(&self, key: &str, data: &[u8], blake3_hex: &str) {
        let RawStore::Server { prefix, .. } = self else {
            panic!("only server objects carry metadata");
        };
        let file = tempfile::NamedTempFile::new().expect("temp file");
        fs::write(file.path(), data).expect("write temp file");
        let mut cmd = self.python_command(&["forge", &format!("{prefix}/{key}")]);
        cmd.arg(file.path()).arg(blake3_hex);
        let out = cmd.output().expect("run python3");
        assert!(
            out.status.success(),
            "rawstore.py forge failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keys of unfinished S3 multipart uploads under `sub` (none elsewhere).
    pub fn multipart_uploads(&self, sub: &str) -> Vec<String> {
        match self {
            RawStore::Server {
                kind: "s3", prefix, ..
            } => {
                let out = self.python(&["uploads", &format!("{prefix}/{sub}")], None);
                String::from_utf8(out)
                    .expect("UTF-8 keys")
                    .lines()
                    .map(str::to_string)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        match self {
            RawStore::Dir(root) => {
                let path = root.join(key);
                fs::create_dir_all(path.parent().expect("key has a parent")).expect("mkdir");
                fs::write(path, data).expect("write object file");
            }
            RawStore::Server { prefix, .. } => {
                let file = tempfile::NamedTempFile::new().expect("temp file");
                fs::write(file.path(), data).expect("write temp file");
                self.python(&["put", &format!("{prefix}/{key}")], Some(file.path()));
            }
        }
    }

    /// Starts watching for the first object under `sub` named by a 64-hex id (so not a
    /// file store's staging file, `<id>#<n>`); start it before the writer, so that its setup
    /// does not delay the first look.
    pub fn watch(&self, sub: &str) -> Watch<'_> {
        let watcher = match self {
            RawStore::Dir(_) => None,
            RawStore::Server { prefix, .. } => Some(
                self.python_command(&["await", &format!("{prefix}/{sub}")])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("run python3"),
            ),
        };
        Watch {
            store: self,
            sub: sub.to_string(),
            watcher,
        }
    }

    /// Deletes everything under a server location (moto and Azurite keep it all in RAM).
    fn clear(&self) {
        if let RawStore::Server { prefix, .. } = self {
            self.python(&["clear", &format!("{prefix}/")], None);
        }
    }

    fn python(&self, args: &[&str], file: Option<&Path>) -> Vec<u8> {
        let mut cmd = self.python_command(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        let out = cmd
            .output()
            .expect("run python3 (it is needed for raw access to the test servers)");
        assert!(
            out.status.success(),
            "rawstore.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn python_command(&self, args: &[&str]) -> Command {
        let RawStore::Server {
            kind,
            endpoint,
            bucket,
            ..
        } = self
        else {
            unreachable!("only server stores use rawstore.py")
        };
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(RAWSTORE_PY)
            .args([*kind, endpoint, bucket])
            .args(args);
        cmd
    }
}

fn list_dir(root: &Path, dir: &Path, out: &mut Vec<Object>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("read dir entry");
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // A store writing while we list: object_store's local staging file (`NAME#N`) is
            // renamed into place between the listing and the stat. Not an object yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("stat {}: {e}", path.display()),
        };
        if meta.is_dir() {
            list_dir(root, &path, out);
        } else if is_staging_name(s(&path)) {
            // object_store's local staging file (`NAME#N`): not an object until it is renamed
            // into place, and a kill before the rename leaves no object.
            continue;
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(Object {
                key: s(rel).replace('\\', "/"),
                size: meta.len(),
            });
        }
    }
}

/// Whether a path's last component is a name `object_store`'s local file store reserves
/// (`NAME#123`): it writes `NAME#N` and renames it to `NAME` once complete.
pub fn is_staging_name(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rsplit_once('#')
        .is_some_and(|(_, d)| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A watch for the first object named by an id under a prefix: see [`RawStore::watch`].
pub struct Watch<'a> {
    store: &'a RawStore,
    sub: String,
    /// For the servers, `rawstore.py await`, which polls in one process.
    watcher: Option<Child>,
}

impl Watch<'_> {
    /// Returns `true` as soon as an object exists, or `false` once `give_up()` says so.
    pub fn wait(mut self, mut give_up: impl FnMut() -> bool) -> bool {
        loop {
            let found = match &mut self.watcher {
                None => self
                    .store
                    .list(&self.sub)
                    .iter()
                    .any(|o| is_object_id(o.file_name())),
                Some(child) => match child.try_wait().expect("poll python3") {
                    Some(status) => {
                        assert!(status.success(), "rawstore.py await {} failed", self.sub);
                        true
                    }
                    None => false,
                },
            };
            if found {
                return true;
            }
            if give_up() {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(child) = &mut self.watcher {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pack objects under a location: `packs/<2 hex>/<64 hex>`.
pub fn pack_objects(raw: &RawStore) -> Vec<Object> {
    raw.list("packs/")
        .into_iter()
        .filter(|o| is_object_id(o.file_name()))
        .collect()
}

/// The pack ids that have a pack index object `index/<pack id>`.
pub fn indexed_pack_ids(raw: &RawStore) -> BTreeSet<String> {
    raw.list("index/")
        .into_iter()
        .map(|o| o.file_name().to_string())
        .filter(|name| is_object_id(name))
        .collect()
}

pub fn is_object_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}
