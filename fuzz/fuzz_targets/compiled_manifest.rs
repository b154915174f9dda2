//! The compiled manifest: any bytes as `converged.manifest`, read as a run
//! that found the seal drifted reads it (asked for the digest the bytes end
//! with, so that a well-formed file gets past the check to the decoding),
//! with and without the graph its edges make.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::graph::Graph;
use stead_lib::manifest::compiled::{COMPILED_FILE, Digest, read, read_with_edges};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    stead_fuzz::put(&layout.state_dir().join(COMPILED_FILE), data);
    let digest: Digest = data
        .len()
        .checked_sub(32)
        .and_then(|at| data.get(at..))
        .and_then(|tail| tail.try_into().ok())
        .unwrap_or_default();
    let _ = read(layout.state_dir(), &digest);
    if let Some((manifest, edges)) = read_with_edges(layout.state_dir(), &digest) {
        let _ = Graph::from_packed(&manifest, edges);
    }
});
