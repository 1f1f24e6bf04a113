//! Provider-supplied text quoted back: in an answer, a log line, a held delivery's reason. A leaf
//! module: every layer quotes, and none may depend on another for it.

/// Provider-supplied text quoted in an answer or a log line (an unknown event name, a repeated
/// key, an amount) is cut to this many characters: enough to recognise, never the whole body.
pub const MAX_ECHO: usize = 120;

/// `text` cut to [`MAX_ECHO`] characters, marked with `…` where cut.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}
