//! The dashboard's static files, built into the binary and served under `/ui/assets/` with a
//! content hash in each name (`dashboard-1a2b3c4d5e6f.css`), so a browser may cache them for a
//! year: a new build has new names. No CDN, no files on disk. The vendored ones and their
//! checksums are listed in `assets/VENDORED.md`.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One built-in file.
pub struct Asset {
    /// The name pages link to, with its content hash.
    pub name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// What the pages link to.
pub struct Assets {
    pub css: Asset,
    pub js: Asset,
    pub htmx: Asset,
    /// The terminal and diff pages' own styles and the terminal's script.
    pub views_css: Asset,
    pub terminal_js: Asset,
    /// xterm.js and its fit addon (`assets/xterm/VENDORED.md`).
    pub xterm_js: Asset,
    pub xterm_css: Asset,
    pub xterm_fit: Asset,
}

fn asset(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = hex::encode(Sha256::digest(bytes));
    Asset {
        name: format!("{stem}-{}.{ext}", &hash[..12]),
        content_type,
        bytes,
    }
}

/// The files, hashed once on first use.
pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: asset(
        "dashboard",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/dashboard.css"),
    ),
    js: asset(
        "dashboard",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dashboard.js"),
    ),
    htmx: asset(
        "htmx-2.0.11",
        "min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    views_css: asset(
        "views",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/views.css"),
    ),
    terminal_js: asset(
        "terminal",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/terminal.js"),
    ),
    xterm_js: asset(
        "xterm-6.0.0",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/xterm/xterm-6.0.0.js"),
    ),
    xterm_css: asset(
        "xterm-6.0.0",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/xterm/xterm-6.0.0.css"),
    ),
    xterm_fit: asset(
        "addon-fit-0.11.0",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/xterm/addon-fit-0.11.0.js"),
    ),
});

impl Assets {
    fn find(&self, name: &str) -> Option<&Asset> {
        [
            &self.css,
            &self.js,
            &self.htmx,
            &self.views_css,
            &self.terminal_js,
            &self.xterm_js,
            &self.xterm_css,
            &self.xterm_fit,
        ]
        .into_iter()
        .find(|a| a.name == name)
    }

    /// The URL of an asset.
    pub fn url(asset: &Asset) -> String {
        format!("/ui/assets/{}", asset.name)
    }

    /// Bytes of what the overview loads besides its HTML (CSS + JS), for the page-weight note.
    pub fn weight(&self) -> (usize, usize) {
        (
            self.css.bytes.len(),
            self.js.bytes.len() + self.htmx.bytes.len(),
        )
    }
}

/// `GET /ui/assets/{name}`: public (the files hold no data), cached for a year.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.find(&name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_files_are_the_ones_the_note_names() {
        let note = include_str!("assets/VENDORED.md");
        let htmx = hex::encode(Sha256::digest(ASSETS.htmx.bytes));
        assert!(
            note.contains(&format!("`{htmx}`")),
            "assets/htmx-2.0.11.min.js (sha256 {htmx}) is not the file VENDORED.md names"
        );
    }

    #[test]
    fn vendored_xterm_files_are_the_ones_the_note_names() {
        let note = include_str!("assets/xterm/VENDORED.md");
        for (file, asset) in [
            ("xterm-6.0.0.js", &ASSETS.xterm_js),
            ("xterm-6.0.0.css", &ASSETS.xterm_css),
            ("addon-fit-0.11.0.js", &ASSETS.xterm_fit),
        ] {
            let sha = hex::encode(Sha256::digest(asset.bytes));
            assert!(
                note.contains(&format!("| `{file}` |")) && note.contains(&format!("`{sha}`")),
                "assets/xterm/{file} (sha256 {sha}) is not the file VENDORED.md names"
            );
        }
        let lock = include_str!("assets/xterm/package-lock.json");
        assert!(
            lock.contains("\"version\": \"6.0.0\"") && lock.contains("\"version\": \"0.11.0\"")
        );
    }

    #[test]
    fn names_carry_the_content_hash() {
        assert!(ASSETS.css.name.starts_with("dashboard-"));
        assert!(ASSETS.css.name.ends_with(".css"));
        assert_eq!(
            ASSETS.css.name.len(),
            "dashboard-".len() + 12 + ".css".len()
        );
        assert!(ASSETS.find(&ASSETS.js.name).is_some());
        assert!(ASSETS.find("dashboard.js").is_none());
    }
}
