//! The pages (the receive page and the local UI), built from `web/src`
//! into `web/dist` (committed, so a build needs no npm) and embedded here.
//! `.ci/run` rebuilds `web/dist` from `web/package-lock.json` and fails if
//! it differs from what is committed.

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// Every file of the page.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/dist/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/dist/app.css"),
    },
];

/// The asset served at `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// The local UI's page, with `__TOKEN__` where the token goes
/// (`web/src/ui`).
pub static UI_HTML: &[u8] = include_bytes!("../../web/dist/ui.html");

/// The local UI's script and style.
pub static UI_ASSETS: &[Asset] = &[
    Asset {
        path: "/ui.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/ui.js"),
    },
    Asset {
        path: "/ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/dist/ui.css"),
    },
];

/// The local UI's asset served at `path`.
pub fn find_ui(path: &str) -> Option<&'static Asset> {
    UI_ASSETS.iter().find(|a| a.path == path)
}
