//! `stead graph`: the resource graph with its edges; autoedges are marked.

use crate::output::out;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::cli::GraphFormat;
use crate::context::Context;
use crate::output::print_json;

pub fn run(ctx: &Context, format: GraphFormat, profile: Option<&str>) -> Result<ExitCode> {
    let state = ctx.current_state()?;
    let (manifest, graph) = ctx.load_manifest(Some(&state), profile)?;
    match (format, ctx.json) {
        (GraphFormat::Json, _) | (_, true) => {
            let nodes: Vec<_> = manifest
                .resources
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "kind": r.kind(),
                        "path": r.spec.path().map(|p| manifest.display_path(p)),
                    })
                })
                .collect();
            let edges: Vec<_> = graph
                .edges
                .iter()
                .map(|e| json!({"from": e.from, "to": e.to, "kind": e.kind, "auto": e.kind.is_auto()}))
                .collect();
            print_json(&json!({"profile": manifest.profile, "nodes": nodes, "edges": edges}));
        }
        (GraphFormat::Dot, false) => out!("{}", graph.to_dot()),
    }
    Ok(ExitCode::SUCCESS)
}
