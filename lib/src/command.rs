//! What a command is: a program with its arguments, or a string for
//! `sh -c`. Shared by the manifest (`exec`, `check`), check reports and
//! the state record's committed migrations.

/// How an exec runs its command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Program and arguments, no shell.
    Argv(Vec<String>),
    /// A string run with `sh -c`.
    Shell(String),
}

impl Command {
    /// The command as a person would type it.
    pub fn display(&self) -> String {
        match self {
            Command::Argv(argv) => argv.join(" "),
            Command::Shell(s) => s.clone(),
        }
    }
}
