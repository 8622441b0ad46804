//! Embedded pages and assets: everything the phone needs is in the binary
//! (no CDN: a race track has no internet). Icons are drawn at first request.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

const APP_HTML: &str = include_str!("../assets/app.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");
const MANIFEST: &str = include_str!("../assets/manifest.webmanifest");
const SW_JS: &str = include_str!("../assets/sw.js");

pub fn app_html() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        APP_HTML,
    )
        .into_response()
}

pub async fn manifest() -> Response {
    (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        MANIFEST,
    )
        .into_response()
}

pub async fn service_worker() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SW_JS,
    )
        .into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.css" => ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response(),
        "app.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            APP_JS,
        )
            .into_response(),
        "icon-192.png" => png(icon(192)),
        "icon-512.png" => png(icon(512)),
        "apple-touch-icon.png" => png(icon(180)),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn png(bytes: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

fn icon(size: u32) -> &'static [u8] {
    static I192: OnceLock<Vec<u8>> = OnceLock::new();
    static I512: OnceLock<Vec<u8>> = OnceLock::new();
    static I180: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = match size {
        192 => &I192,
        512 => &I512,
        _ => &I180,
    };
    cell.get_or_init(|| draw_icon(size))
}

/// A yellow chevron (a track's racing line) on near-black: legible as a
/// home-screen icon at any size.
pub fn draw_icon(size: u32) -> Vec<u8> {
    let mut img = image::RgbImage::new(size, size);
    let s = size as f32;
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (u, v) = (x as f32 / s, y as f32 / s);
        let mut c = [17u8, 17, 17];
        // Chevron: two thick strokes meeting at the right.
        let d1 = ((v - 0.5) - (u - 0.72) * -0.9).abs();
        let d2 = ((v - 0.5) - (u - 0.72) * 0.9).abs();
        let in_x = (0.25..=0.74).contains(&u);
        if in_x && (d1 < 0.09 && v < 0.52 || d2 < 0.09 && v >= 0.48) {
            c = [255, 204, 0];
        }
        // Red stop dot.
        if ((u - 0.26).powi(2) + (v - 0.78).powi(2)).sqrt() < 0.07 {
            c = [230, 40, 40];
        }
        *p = image::Rgb(c);
    }
    let mut out = Vec::new();
    let _ = img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png);
    out
}
