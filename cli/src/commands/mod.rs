//! One module per command or command group.

pub mod add;
pub mod apply;
pub mod cd;
pub mod check;
pub mod commit;
pub mod completion;
pub mod doctor;
pub mod drift;
pub mod edit;
pub mod fleet;
pub mod graph;
pub mod init;
pub mod merge_driver;
pub mod plan;
pub mod repo;
pub mod secret;
pub mod state;
pub mod status;
pub mod sync;
pub mod watch;

/// `$VISUAL`, else `$EDITOR`, else `vi` only when there is a terminal to
/// run it in; with none, an error saying `command` needs one and `otherwise`
/// (what else the user can do).
pub fn editor(command: &str, otherwise: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    let set = |name: &str| std::env::var(name).ok().filter(|e| !e.trim().is_empty());
    if let Some(editor) = set("VISUAL").or_else(|| set("EDITOR")) {
        return Ok(editor);
    }
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return Ok("vi".to_string());
    }
    anyhow::bail!(
        "'{command}' needs an editor, and neither $VISUAL nor $EDITOR is set and there is no terminal to run vi in\n\
         Nothing was changed. {otherwise}"
    )
}
