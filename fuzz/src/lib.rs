//! What the fuzz targets share: a scratch home and state dir per process,
//! made once, where a target writes its input as the file it tests.

use std::path::Path;
use std::sync::OnceLock;

use stead_lib::layout::Layout;

/// The process's scratch layout (`<tmp>/home`, state dir `<tmp>/home/.stead`),
/// made on first use. Left in the system temp dir: a fuzzing process is
/// killed, not ended, so nothing would remove it anyway; it is tiny.
pub fn scratch() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("stead-fuzz-{}", std::process::id()));
        let layout = Layout::new(root.join("home"), None);
        std::fs::create_dir_all(layout.state_dir()).expect("scratch state dir");
        layout
    })
}

/// Writes `data` to `path` (the harness's own I/O: a failure is a broken
/// machine, not a finding).
pub fn put(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write the input file");
}
