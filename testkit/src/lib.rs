//! Helper programs for stead's multi-process tests (see `src/bin/`): they use
//! stead-lib exactly as the CLI does, so the tests exercise the real locks and
//! the real atomic writes across real processes.
