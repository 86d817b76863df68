//! `peerdrop ui`: the link of the daemon's local web UI.

use std::process::{Command, Stdio};

use anyhow::Context;
use peerdrop::daemon::control::{self, StatusRequest};
use peerdrop::web::ui::{ui_link, UiToken, TOKEN_FILE};

use crate::cli::UiArgs;

/// Prints the UI's link (the daemon's `status` says where it listens, the
/// data dir holds its token) and, with `--open`, opens it.
pub fn run(a: &UiArgs) -> anyhow::Result<()> {
    let dir = a.dir.path()?;
    // The control client checks that the data dir and the daemon are ours
    // before the token file is read.
    let status = control::call(&dir, StatusRequest {}, |_, _| {})?;
    let addr = status.ui.context(
        "the daemon serves no UI: `ui = false` in its peerdrop.toml, or it could not bind \
         ui_listen (see its log)",
    )?;
    let path = dir.join(TOKEN_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the UI token {}", path.display()))?;
    let token = UiToken::from_hex(&text).with_context(|| path.display().to_string())?;
    let link = ui_link(addr, &token);
    println!("{link}");
    if a.open {
        // The opener is left to run on its own: browsers keep it waiting.
        match Command::new("xdg-open")
            .arg(&link)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(_) => eprintln!("opening it in your browser"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("xdg-open is not installed: open the link above in a browser")
            }
            Err(e) => return Err(e).context("starting xdg-open"),
        }
    }
    Ok(())
}
