//! A yes/no question for a person at a terminal, before a step that moves
//! traffic or drops a preview. Never asked when stdin is not a terminal, so a
//! pipeline never hangs on it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;

/// Asks on the terminal; `true` without asking when stdin is not a terminal.
pub fn confirm(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(true);
    }
    // A closed stderr is no reason to stop: the answer is read all the same.
    let _ = write!(std::io::stderr(), "{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
