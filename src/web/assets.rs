//! Static assets (CSS, JS, icons) embedded in the binary, served under a URL that carries a hash
//! of their content so they can be cached for a year, pre-compressed once at start.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::cache::{CachePolicy, CachedPage};
use super::error::Path;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Files;

/// All assets, by their hashed name (`style.3f2a9c1d.css`) and by their plain name.
pub struct Assets {
    by_hashed: HashMap<String, CachedPage>,
    urls: HashMap<String, String>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

impl Assets {
    fn load() -> Self {
        let mut by_hashed = HashMap::new();
        let mut urls = HashMap::new();
        for name in Files::iter() {
            let file = Files::get(&name).expect("listed files exist");
            let page = CachedPage::new(
                file.data.into_owned().into(),
                content_type(&name),
                CachePolicy::Immutable,
                super::cache::PAGE_BROTLI_QUALITY,
            );
            let hash = &page.hash()[..12];
            let hashed = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{name}.{hash}"),
            };
            urls.insert(name.to_string(), format!("/static/{hashed}"));
            by_hashed.insert(hashed, page);
        }
        Self { by_hashed, urls }
    }

    /// The URL of asset `name` (e.g. `style.css`).
    pub fn url(&self, name: &str) -> &str {
        self.urls
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no static asset named {name}"))
    }
}

/// Loaded once per process: the files are compiled in.
pub static ASSETS: LazyLock<Assets> = LazyLock::new(Assets::load);

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>, request: Request) -> Response {
    match ASSETS.by_hashed.get(&file) {
        Some(page) => page.respond(request.headers()),
        None => super::error::AppError::NotFound.into_response(),
    }
}
