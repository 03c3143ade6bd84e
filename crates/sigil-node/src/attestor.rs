//! The unix workload attestor: who is calling on the socket, from the kernel's peer
//! credentials (uid, gid, pid), the executable's path (`/proc/<pid>/exe`) and its SHA-256.
//! These become selectors (`unix:uid:1000`, `unix:gid:1000`, `unix:path:/usr/bin/app`,
//! `unix:sha256:<hex>`); a workload gets an entry's SVID only if it has every selector of the
//! entry.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use sigil_proto::node::{NodeEntry, WorkloadInfo};

/// What the kernel says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// The program the process ran when it connected (read as the connection was accepted).
    pub exe_at_connect: Option<PathBuf>,
}

/// The program process `pid` runs now.
pub fn exe_of(pid: Option<i32>) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{}/exe", pid?)).ok()
}

/// An attested caller: its selectors and the evidence for the audit trail.
#[derive(Debug, Clone)]
pub struct Workload {
    pub selectors: BTreeSet<String>,
    pub info: WorkloadInfo,
    /// Whether the executable's hash could be taken (it is only taken when an entry asks).
    exe: Option<PathBuf>,
}

/// Hashes executables once per (path, size, mtime): a busy workload's calls do not rehash.
#[derive(Debug, Default)]
pub struct Attestor {
    hashes: Mutex<HashMap<(PathBuf, u64, SystemTime), String>>,
}

impl Attestor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attests a caller. The `unix:sha256` selector is computed only if some entry uses one.
    pub fn attest(&self, peer: &PeerCredentials, entries: &[NodeEntry]) -> Workload {
        let mut selectors = BTreeSet::new();
        selectors.insert(format!("unix:uid:{}", peer.uid));
        selectors.insert(format!("unix:gid:{}", peer.gid));
        // A process keeps its pid and credentials across exec: one that connected and then
        // exec'd another program would be attested as that program. Path and hash selectors
        // are only given while the program is still the one that connected, checked before
        // and after reading them.
        let exe = exe_of(peer.pid).filter(|now| Some(now) == peer.exe_at_connect.as_ref());
        if let Some(path) = &exe {
            selectors.insert(format!("unix:path:{}", path.display()));
        }
        let mut w = Workload {
            selectors,
            info: WorkloadInfo {
                uid: Some(peer.uid),
                gid: Some(peer.gid),
                pid: peer.pid,
                path: exe.as_ref().map(|p| p.display().to_string()),
            },
            exe,
        };
        let wants_hash = entries
            .iter()
            .any(|e| e.selectors.iter().any(|s| s.starts_with("unix:sha256:")));
        if wants_hash && let Some(h) = self.hash_exe(&w, peer.pid) {
            w.selectors.insert(format!("unix:sha256:{h}"));
        }
        if w.exe.is_some() && exe_of(peer.pid) != w.exe {
            w.selectors
                .retain(|s| !s.starts_with("unix:path:") && !s.starts_with("unix:sha256:"));
            w.exe = None;
        }
        w
    }

    fn hash_exe(&self, w: &Workload, pid: Option<i32>) -> Option<String> {
        let path = w.exe.as_ref()?;
        // Read through /proc/<pid>/exe, not the path: the file at the path may have been
        // replaced since the process started.
        let proc_exe = format!("/proc/{}/exe", pid?);
        let meta = std::fs::metadata(&proc_exe).ok()?;
        let key = (path.clone(), meta.len(), meta.modified().ok()?);
        if let Ok(cache) = self.hashes.lock()
            && let Some(h) = cache.get(&key)
        {
            return Some(h.clone());
        }
        let bytes = std::fs::read(&proc_exe).ok()?;
        let hex = sigil_crypto::hex(&sigil_crypto::sha256(&bytes));
        if let Ok(mut cache) = self.hashes.lock() {
            if cache.len() > 1024 {
                cache.clear();
            }
            cache.insert(key, hex.clone());
        }
        Some(hex)
    }
}

impl Workload {
    /// The entries whose selectors the workload all has.
    pub fn matching<'a>(&self, entries: &'a [NodeEntry]) -> Vec<&'a NodeEntry> {
        entries
            .iter()
            .filter(|e| !e.selectors.is_empty() && e.selectors.iter().all(|s| self.selectors.contains(s)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn entry(id: &str, selectors: &[&str]) -> NodeEntry {
        NodeEntry {
            id: id.into(),
            spiffe_id: format!("spiffe://t.test/{id}"),
            selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
            x509_ttl_seconds: 3600,
            jwt_ttl_seconds: 300,
        }
    }

    #[test]
    fn every_selector_of_an_entry_must_match() {
        let pid = Some(i32::try_from(std::process::id()).unwrap());
        let me = PeerCredentials {
            uid: nix_uid(),
            gid: 4242,
            pid,
            exe_at_connect: exe_of(pid),
        };
        let exe = std::env::current_exe().unwrap();
        let hash = sigil_crypto::hex(&sigil_crypto::sha256(&std::fs::read(&exe).unwrap()));
        let uid = format!("unix:uid:{}", me.uid);
        let path = format!("unix:path:{}", exe.display());
        let sha = format!("unix:sha256:{hash}");
        let entries = vec![
            entry("a", &[&uid]),
            entry("b", &[&uid, "unix:gid:4242", &path, &sha]),
            entry("c", &[&uid, "unix:gid:1"]),
            entry("d", &["unix:sha256:00"]),
        ];
        let w = Attestor::new().attest(&me, &entries);
        let ids: Vec<&str> = w.matching(&entries).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"]);
        // A process that connected running another program (and exec'd this one since) keeps
        // its uid and gid selectors, not this program's path or hash.
        let execd = PeerCredentials {
            exe_at_connect: Some(PathBuf::from("/usr/bin/python3")),
            ..me
        };
        let w = Attestor::new().attest(&execd, &entries);
        let ids: Vec<&str> = w.matching(&entries).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["a"]);
    }

    fn nix_uid() -> u32 {
        // The test only needs a stable number; the real uid comes from the socket.
        1000
    }
}
