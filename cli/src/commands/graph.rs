//! `stead graph`: the resource graph with its edges; autoedges are marked.

use crate::output::out;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Use this profile instead of the recorded one
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

pub fn run(ctx: &Context, args: &GraphArgs) -> Result<ExitCode> {
    let (format, profile) = (args.format, args.profile.as_deref());
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
                .map(|e| {
                    let (from, to) = graph.ends(e);
                    json!({"from": from, "to": to, "kind": e.kind, "auto": e.kind.is_auto()})
                })
                .collect();
            print_json(&json!({"profile": manifest.profile, "nodes": nodes, "edges": edges}));
        }
        (GraphFormat::Dot, false) => out!("{}", graph.to_dot()),
    }
    Ok(ExitCode::SUCCESS)
}
