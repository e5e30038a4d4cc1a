//! The dashboard: one page and its vendored scripts, embedded in the binary
//! (no build step, no CDN). `GET /` is the page; `GET /assets/{file}` its
//! stylesheet, its script and cytoscape (the graph library, vendored with its
//! licence). Every answer carries a strict Content-Security-Policy: scripts
//! and connections only from this origin, no inline script.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::extract::PathParam;
use crate::Routes;

/// The page's policy: everything from this origin only, no inline script,
/// no plugin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/assets/`, its content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page itself.
const INDEX: &[u8] = include_bytes!("../assets/index.html");

/// Every file under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("../assets/app.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../assets/app.js") },
    Asset {
        name: "cytoscape.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/cytoscape.min.js"),
    },
    Asset {
        name: "cytoscape.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/cytoscape.LICENSE"),
    },
];

/// `GET /` and `GET /assets/{file}`.
pub fn routes() -> Routes {
    Routes::new().add("GET", "/", get(index)).add("GET", "/assets/{file}", get(asset))
}

/// `GET /`: the page. Never cached, so a new binary's page is seen at once.
async fn index() -> Response {
    answer("text/html; charset=utf-8", INDEX, "no-cache")
}

/// `GET /assets/{file}`: an embedded file, or 404 naming the known ones.
async fn asset(PathParam(file): PathParam<String>) -> Response {
    match find(&file) {
        // Revalidated at every load: the files change with the binary and carry no version in their name.
        Some(a) => answer(a.content_type, a.bytes, "no-cache"),
        None => ApiError::not_found(format!(
            "no asset `{file}` (known: {})",
            ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ))
        .into_response(),
    }
}

/// The asset named `name`, matched exactly (a name with `/` or `..` matches none).
fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `bytes` with their type, the cache rule and the security headers.
fn answer(content_type: &'static str, bytes: &'static [u8], cache: &'static str) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppState, Options};
    use axum::http::StatusCode;
    use axum::Router;
    use std::time::Duration;

    /// Serves the dashboard's routes on a free loopback port; answers `GET path`.
    async fn get(path: &str) -> reqwest::Response {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::new(Options::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap())).unwrap();
        let Routes { router, .. } = routes();
        let app: Router = router.with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), client.get(format!("http://{addr}{path}")).send())
            .await
            .expect("the server answers within 10 s")
            .unwrap();
        server.abort();
        r
    }

    fn header(r: &reqwest::Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn the_page_and_each_asset_have_their_content_type_and_the_policy() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.css", "text/css; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/cytoscape.min.js", "text/javascript; charset=utf-8"),
            ("/assets/cytoscape.LICENSE", "text/plain; charset=utf-8"),
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ty, "{path}");
            assert_eq!(header(&r, header::CONTENT_SECURITY_POLICY), CSP, "{path}");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache", "{path}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_404_with_the_known_names() {
        for path in ["/assets/nope.js", "/assets/..%2fCargo.toml", "/assets/vendor%2fcytoscape.min.js"] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "not_found", "{path}");
            assert!(v["error"]["message"].as_str().unwrap().contains("app.js"), "{v}");
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_only_this_origin() {
        assert!(CSP.contains("script-src 'self';"));
        assert!(CSP.contains("connect-src 'self';"));
        assert!(!CSP.contains("unsafe"));
    }

    #[test]
    fn the_page_loads_its_scripts_from_assets_and_has_no_inline_script() {
        let page = std::str::from_utf8(INDEX).unwrap();
        for s in page.split("<script").skip(1) {
            let tag = &s[..s.find('>').unwrap()];
            assert!(tag.contains("src=\"/assets/"), "an inline or foreign script: <script{tag}>");
            assert!(s[s.find('>').unwrap() + 1..].starts_with("</script>"), "a script with a body");
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js") || a.name.ends_with(".css")) {
            assert!(page.contains(&format!("/assets/{}", a.name)), "the page does not load {}", a.name);
        }
        let handler = page.match_indices(" on").any(|(i, _)| {
            let rest = &page[i + 3..];
            let word = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
            word > 0 && rest[word..].starts_with('=')
        });
        assert!(!handler, "an inline event handler (the policy blocks them)");
    }
}
