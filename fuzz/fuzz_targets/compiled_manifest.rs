//! The compiled manifest: any bytes as `converged.manifest`, read as a run
//! that found the seal drifted reads it, with and without the graph its
//! edges make, and in part, as a repair reads it (the scope of the first
//! and last resources it names, if it reads whole, else of an id that may
//! be there): a part is marked as one and holds no more resources than
//! the whole. Twice: the bytes as the whole file (asked for the
//! digest they end with), and the bytes as the payload of a file whose
//! magic and digest are right, so that every input reaches the decoding.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use stead_lib::graph::Graph;
use stead_lib::manifest::compiled::{
    COMPILED_FILE, Digest, MAGIC, read, read_scope, read_with_edges,
};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let file = layout.state_dir().join(COMPILED_FILE);
    let tail: Digest = data
        .len()
        .checked_sub(32)
        .and_then(|at| data.get(at..))
        .and_then(|tail| tail.try_into().ok())
        .unwrap_or_default();
    let digest = *blake3::hash(data).as_bytes();
    let sealed = [MAGIC, data, &digest].concat();
    for (bytes, digest) in [(data, tail), (&sealed[..], digest)] {
        stead_fuzz::put(&file, bytes);
        let _ = read(layout.state_dir(), &digest);
        let whole = read_with_edges(layout.state_dir(), &digest);
        let mut drifted: HashSet<String> = HashSet::from(["file.a".to_string()]);
        if let Some((manifest, _)) = &whole {
            drifted.extend(manifest.resources.first().map(|r| r.id.clone()));
            drifted.extend(manifest.resources.last().map(|r| r.id.clone()));
        }
        let part = read_scope(layout.state_dir(), &digest, &drifted);
        if let Some((manifest, edges)) = part {
            assert!(manifest.partial.is_some(), "a part is marked as one");
            if let Some((whole, _)) = &whole {
                assert!(manifest.resources.len() <= whole.resources.len());
            }
            let _ = Graph::from_packed(&manifest, edges);
        }
        if let Some((manifest, edges)) = whole {
            let _ = Graph::from_packed(&manifest, edges);
        }
    }
});
