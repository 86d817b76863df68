//! `peerdrop cat`: one file of a share to stdout, verified chunk by chunk.

use peerdrop::link::Link;
use peerdrop::net::fetch::stream_file;

use crate::cli::{CatArgs, Interrupted};

/// Runs the command.
pub fn run(args: &CatArgs) -> anyhow::Result<()> {
    let look = &args.look;
    crate::cli::init_logging(look.one_shot.verbose);
    let text = match args.link.as_str() {
        "env" => crate::cli::link_text(None)?,
        l => crate::cli::link_text_long(Some(l))?,
    };
    let link = look.password.open(Link::parse_read_link(&text)?)?;
    let sources = crate::cli::receive::sources(&link, &look.peer, &look.one_shot.discovery)?;
    let rt = crate::cli::runtime()?;
    rt.block_on(async {
        let (client, opts) =
            crate::cli::receive::node_and_options(&look.one_shot).await?;
        let (tx, rx) = peerdrop::net::fetch::progress_channel();
        let ui = tokio::spawn(crate::cli::receive::report_waiting(rx, false));
        // Unbuffered: each verified chunk is written (and flushed) whole.
        let out = Box::new(std::io::stdout());
        let r = tokio::select! {
            r = stream_file(&client, &link, sources, &args.path, &opts, tx, out) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
        };
        let _ = ui.await;
        client.shutdown().await;
        r.map(|_| ())
    })
}
