//! Merkle tree hashing and proofs exactly as RFC 9162 §2.1 defines them (the Certificate
//! Transparency tree): leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), and the
//! split at the largest power of two smaller than the size.
//!
//! Trees are read through [`NodeSource`]: the hash of any *perfect, aligned* subtree
//! (level `l`, index `i` covers leaves `[i·2^l, (i+1)·2^l)`). Every subtree the RFC's recursion
//! visits on the left is of that shape, so a store that keeps those nodes answers any root or
//! proof with O(log n) lookups. [`needed_nodes`] lists the lookups a computation will make, so a
//! caller can fetch them all in one query first.

use std::cell::RefCell;
use std::collections::HashMap;

use sigil_crypto::sha256;

pub type Hash = [u8; 32];

/// RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
pub fn empty_root() -> Hash {
    sha256(b"")
}

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(0x00);
    buf.extend_from_slice(data);
    sha256(&buf)
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Hashes of perfect, aligned subtrees.
pub trait NodeSource {
    fn node(&self, level: u32, index: u64) -> Option<Hash>;
}

/// MTH of leaves `[start, start + n)`, where the range is one the RFC recursion reaches.
fn mth(src: &dyn NodeSource, start: u64, n: u64) -> Option<Hash> {
    if n == 0 {
        return Some(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return src.node(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    Some(node_hash(&mth(src, start, k)?, &mth(src, start + k, n - k)?))
}

/// The root hash of the first `size` leaves.
pub fn root(src: &dyn NodeSource, size: u64) -> Option<Hash> {
    mth(src, 0, size)
}

/// RFC 9162 §2.1.3.1: the audit path for leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(src: &dyn NodeSource, index: u64, size: u64) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Some(out)
}

fn path(src: &dyn NodeSource, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Option<()> {
    if n <= 1 {
        return Some(());
    }
    let k = split(n);
    if m < k {
        path(src, m, start, k, out)?;
        out.push(mth(src, start + k, n - k)?);
    } else {
        path(src, m - k, start + k, n - k, out)?;
        out.push(mth(src, start, k)?);
    }
    Some(())
}

/// RFC 9162 §2.1.4.1: the consistency proof between tree sizes `first` and `second`.
pub fn consistency_proof(src: &dyn NodeSource, first: u64, second: u64) -> Option<Vec<Hash>> {
    if first == 0 || first > second {
        return None;
    }
    let mut out = Vec::new();
    subproof(src, first, 0, second, true, &mut out)?;
    Some(out)
}

fn subproof(src: &dyn NodeSource, m: u64, start: u64, n: u64, whole: bool, out: &mut Vec<Hash>) -> Option<()> {
    if m == n {
        if !whole {
            out.push(mth(src, start, n)?);
        }
        return Some(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, k, whole, out)?;
        out.push(mth(src, start + k, n - k)?);
    } else {
        subproof(src, m - k, start + k, n - k, false, out)?;
        out.push(mth(src, start, k)?);
    }
    Some(())
}

/// RFC 9162 §2.1.3.2: checks an inclusion proof.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

/// RFC 9162 §2.1.4.2: checks a consistency proof between two tree heads.
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if first.is_power_of_two() {
        proof.insert(0, *first_root);
    }
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let Some((head, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    &fr == first_root && &sr == second_root && sn == 0
}

/// Which perfect subtrees `compute` will read, so they can be fetched in one query.
pub fn needed_nodes(compute: impl FnOnce(&dyn NodeSource)) -> Vec<(u32, u64)> {
    struct Recorder(RefCell<Vec<(u32, u64)>>);
    impl NodeSource for Recorder {
        fn node(&self, level: u32, index: u64) -> Option<Hash> {
            self.0.borrow_mut().push((level, index));
            Some([0; 32])
        }
    }
    let r = Recorder(RefCell::new(Vec::new()));
    compute(&r);
    let mut v = r.0.into_inner();
    v.sort_unstable();
    v.dedup();
    v
}

/// Nodes fetched from storage.
impl NodeSource for HashMap<(u32, u64), Hash> {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        self.get(&(level, index)).copied()
    }
}

/// Perfect subtrees below this level are not stored: each is hashed again, when a root or proof
/// needs it, from the at most 2^6 = 64 leaf hashes under it (kept with the records). Storing
/// every level wrote two node rows per record on the one serial writer; from level 6 up it is
/// one row per 32 records.
pub const LOWEST_STORED_LEVEL: u32 = 6;

/// Whether the perfect subtrees of `level` are kept in storage (see [`LOWEST_STORED_LEVEL`]).
pub fn is_stored(level: u32) -> bool {
    level >= LOWEST_STORED_LEVEL
}

/// The leaves the perfect subtree (`level`, `index`) covers.
pub fn leaves_under(level: u32, index: u64) -> std::ops::Range<u64> {
    index << level..(index + 1) << level
}

/// Every perfect subtree strictly inside (`level`, `index`), leaves (level 0) included.
pub fn descendants(level: u32, index: u64) -> impl Iterator<Item = (u32, u64)> {
    (0..level).flat_map(move |l| leaves_under(level - l, index).map(move |i| (l, i)))
}

/// The hash of (`level`, `index`) from what is `known` below it: level-0 entries are leaf
/// hashes, and a known node stands for its whole subtree (as a pruned prefix's frontier does).
pub fn hash_from_below(level: u32, index: u64, known: &HashMap<(u32, u64), Hash>) -> Option<Hash> {
    if let Some(h) = known.get(&(level, index)) {
        return Some(*h);
    }
    let below = level.checked_sub(1)?;
    Some(node_hash(
        &hash_from_below(below, 2 * index, known)?,
        &hash_from_below(below, 2 * index + 1, known)?,
    ))
}

/// A whole tree in memory (for verifiers and tests): every perfect subtree, level by level.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf hash; returns the perfect nodes that became complete (level, index, hash),
    /// starting with the leaf itself.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut made = Vec::new();
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else { break };
            row.push(hash);
            let index = row.len() as u64 - 1;
            made.push((level as u32, index, hash));
            if index & 1 == 0 {
                break;
            }
            let Some(left) = row.get(row.len() - 2) else { break };
            hash = node_hash(left, &hash);
            level += 1;
        }
        made
    }

    pub fn root(&self) -> Hash {
        root(self, self.len()).unwrap_or_else(empty_root)
    }
}

impl NodeSource for MemoryTree {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        self.levels
            .get(level as usize)?
            .get(usize::try_from(index).ok()?)
            .copied()
    }
}

/// The frontier of a tree: for each level, the perfect node awaiting a right sibling. Enough to
/// keep appending without the rest of the tree (what the integrator keeps in memory).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    /// `nodes[l]` is the pending left node at level `l`, present exactly when bit `l` of `size` is set.
    pub nodes: Vec<Option<Hash>>,
}

impl Frontier {
    /// The coordinates of the frontier nodes of a tree of `size` leaves.
    pub fn coordinates(size: u64) -> Vec<(u32, u64)> {
        (0..64u32)
            .filter(|l| size >> l & 1 == 1)
            .map(|l| (l, (size >> l) - 1))
            .collect()
    }

    /// Rebuilds the frontier from stored nodes.
    pub fn load(size: u64, src: &dyn NodeSource) -> Option<Self> {
        let mut nodes = vec![None; 64];
        for (l, i) in Self::coordinates(size) {
            *nodes.get_mut(l as usize)? = Some(src.node(l, i)?);
        }
        Some(Self { size, nodes })
    }

    /// Appends a leaf; returns the perfect nodes that became complete.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        if self.nodes.len() < 64 {
            self.nodes.resize(64, None);
        }
        let index = self.size;
        let mut made = vec![(0, index, leaf)];
        let (mut hash, mut level, mut idx) = (leaf, 0usize, index);
        while idx & 1 == 1 {
            let Some(left) = self.nodes.get_mut(level).and_then(Option::take) else {
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            idx >>= 1;
            made.push((level as u32, idx, hash));
        }
        if let Some(slot) = self.nodes.get_mut(level) {
            *slot = Some(hash);
        }
        self.size += 1;
        made
    }

    /// The root hash of the tree so far (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for n in self.nodes.iter().flatten() {
            acc = Some(match acc {
                None => *n,
                Some(a) => node_hash(n, &a),
            });
        }
        acc.unwrap_or_else(empty_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(s: &str) -> Hash {
        unhex(s).try_into().unwrap()
    }

    // RFC 6962 / RFC 9162 reference data (the Certificate Transparency test vectors).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in LEAVES {
            t.push(leaf_hash(&unhex(l)));
        }
        t
    }

    #[test]
    fn roots_match_rfc_vectors() {
        let t = reference();
        assert_eq!(
            root(&t, 0),
            Some(h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
        );
        let mut f = Frontier::default();
        for (n, expected) in ROOTS.iter().enumerate() {
            assert_eq!(root(&t, n as u64 + 1), Some(h(expected)), "size {}", n + 1);
            f.push(leaf_hash(&unhex(LEAVES[n])));
            assert_eq!(f.root(), h(expected), "frontier size {}", n + 1);
        }
    }

    #[test]
    fn inclusion_proofs_match_rfc_vectors() {
        let t = reference();
        let p0 = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        let p5 = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(inclusion_proof(&t, 0, 8).unwrap(), p0.map(h).to_vec());
        assert_eq!(inclusion_proof(&t, 5, 8).unwrap(), p5.map(h).to_vec());
        let root8 = h(ROOTS[7]);
        assert!(verify_inclusion(
            &leaf_hash(&unhex(LEAVES[5])),
            5,
            8,
            &p5.map(h),
            &root8
        ));
        assert!(!verify_inclusion(
            &leaf_hash(&unhex(LEAVES[5])),
            4,
            8,
            &p5.map(h),
            &root8
        ));
        assert!(!verify_inclusion(
            &leaf_hash(&unhex(LEAVES[4])),
            5,
            8,
            &p5.map(h),
            &root8
        ));
    }

    #[test]
    fn consistency_proofs_match_rfc_vectors() {
        let t = reference();
        let cases: [(u64, u64, &[&str]); 3] = [
            (
                2,
                8,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, expected) in cases {
            let proof = consistency_proof(&t, m, n).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
            assert_eq!(proof, expected, "{m}→{n}");
            let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[n as usize - 1]));
            assert!(verify_consistency(m, n, &r1, &r2, &proof));
            assert!(!verify_consistency(m, n, &r2, &r1, &proof));
        }
    }

    #[test]
    fn every_proof_in_every_size_verifies_and_tampering_fails() {
        let mut t = MemoryTree::new();
        let mut f = Frontier::default();
        for i in 0..40u8 {
            let leaf = leaf_hash(&[i, i.wrapping_mul(7)]);
            let a = t.push(leaf);
            let b = f.push(leaf);
            assert_eq!(a, b, "both append paths make the same nodes");
            let loaded = Frontier::load(f.size, &t).unwrap();
            assert_eq!(loaded.root(), f.root());
        }
        for n in 1..=40u64 {
            let rn = root(&t, n).unwrap();
            for i in 0..n {
                let leaf = t.node(0, i).unwrap();
                let p = inclusion_proof(&t, i, n).unwrap();
                assert!(verify_inclusion(&leaf, i, n, &p, &rn), "leaf {i} of {n}");
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&leaf, i, n, &bad, &rn));
                }
            }
            for m in 1..=n {
                let rm = root(&t, m).unwrap();
                let p = consistency_proof(&t, m, n).unwrap();
                assert!(verify_consistency(m, n, &rm, &rn, &p), "{m}→{n}");
                if m < n {
                    assert!(!verify_consistency(m, n, &rn, &rn, &p));
                }
            }
        }
    }

    #[test]
    fn needed_nodes_are_logarithmic() {
        let nodes = needed_nodes(|src| {
            let _ = inclusion_proof(src, 12_345, 1_000_000);
        });
        assert!(nodes.len() <= 2 * 20, "{}", nodes.len());
        assert_eq!(Frontier::coordinates(0b1011), vec![(0, 10), (1, 4), (3, 0)]);
    }

    /// Unstored subtrees come back from the leaves under them, and, where a pruned prefix took
    /// leaves away, from that prefix's frontier and the leaves after it.
    #[test]
    fn unstored_subtrees_are_hashed_from_below() {
        let mut tree = MemoryTree::new();
        for i in 0..300u64 {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        let leaves = |from: u64| -> HashMap<(u32, u64), Hash> {
            (from..300).map(|i| ((0, i), tree.node(0, i).unwrap())).collect()
        };
        let all = leaves(0);
        let pruned_at = 77; // the frontier of 77 leaves: (0, 76), (2, 18), (3, 8), (6, 0)
        let mut after_prune = leaves(pruned_at);
        for (l, i) in Frontier::coordinates(pruned_at) {
            after_prune.insert((l, i), tree.node(l, i).unwrap());
        }
        for level in 0..LOWEST_STORED_LEVEL {
            for index in 0..(300 >> level) {
                let want = tree.node(level, index);
                assert_eq!(hash_from_below(level, index, &all), want, "({level}, {index})");
                let below = leaves_under(level, index);
                if below.start >= pruned_at || below.end <= pruned_at {
                    continue; // entirely kept, or entirely pruned (not on the frontier)
                }
                assert_eq!(hash_from_below(level, index, &after_prune), want, "({level}, {index})");
                assert!(descendants(level, index).all(|(l, i)| leaves_under(l, i).start >= below.start));
            }
        }
        assert_eq!(
            descendants(2, 3).collect::<Vec<_>>(),
            [(0, 12), (0, 13), (0, 14), (0, 15), (1, 6), (1, 7)]
        );
        assert_eq!(hash_from_below(1, 200, &all), None, "leaves past the end");
    }
}
