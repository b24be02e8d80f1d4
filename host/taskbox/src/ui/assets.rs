//! The browser files, embedded in the binary.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Each file: its name, content type and bytes.
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("assets/htmx.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript",
        include_bytes!("assets/sse.min.js"),
    ),
    ("app.js", "text/javascript", include_bytes!("assets/app.js")),
    ("app.css", "text/css", include_bytes!("assets/app.css")),
];

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
