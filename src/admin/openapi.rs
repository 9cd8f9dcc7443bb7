//! The OpenAPI document of the admin API.

/// The document, as JSON text.
pub fn document() -> String {
    String::new()
}
