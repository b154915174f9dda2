//! The compiled manifest: any bytes as `converged.manifest`, read as a run
//! that found the seal drifted reads it, with and without the graph its
//! edges make. Twice: the bytes as the whole file (asked for the digest
//! they end with), and the bytes as the payload of a file whose magic and
//! digest are right, so that every input reaches the decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::graph::Graph;
use stead_lib::manifest::compiled::{COMPILED_FILE, Digest, MAGIC, read, read_with_edges};

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
        if let Some((manifest, edges)) = read_with_edges(layout.state_dir(), &digest) {
            let _ = Graph::from_packed(&manifest, edges);
        }
    }
});
