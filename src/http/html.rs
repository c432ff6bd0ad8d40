//! Text made safe to put in the pages' HTML: what the overview and the
//! cluster drawings share.

/// `text` with HTML's special characters escaped, for an element or an
/// attribute in double quotes.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
