//! A small JSON writer for responses on hot paths.
//!
//! Responses are written straight into one `String`, with commas tracked by
//! the writer, so rendering an order or an account allocates nothing but
//! the output. Money is written with `decimal`, always as a string with the
//! eight decimals Binance prints.

use std::fmt::Write;
use tradsys_engine::num::write_units;

#[derive(Default)]
pub(crate) struct JsonWriter {
    pub(crate) buf: String,
    need_comma: bool,
}

impl JsonWriter {
    pub(crate) fn with_capacity(capacity: usize) -> JsonWriter {
        JsonWriter {
            buf: String::with_capacity(capacity),
            need_comma: false,
        }
    }

    fn sep(&mut self) {
        if self.need_comma {
            self.buf.push(',');
        }
    }

    pub(crate) fn begin_object(&mut self) -> &mut Self {
        self.sep();
        self.buf.push('{');
        self.need_comma = false;
        self
    }

    pub(crate) fn end_object(&mut self) -> &mut Self {
        self.buf.push('}');
        self.need_comma = true;
        self
    }

    pub(crate) fn begin_array(&mut self) -> &mut Self {
        self.sep();
        self.buf.push('[');
        self.need_comma = false;
        self
    }

    pub(crate) fn end_array(&mut self) -> &mut Self {
        self.buf.push(']');
        self.need_comma = true;
        self
    }

    /// A value already written as JSON (a payload another instance
    /// rendered).
    pub(crate) fn raw(&mut self, json: &str) -> &mut Self {
        self.sep();
        self.buf.push_str(json);
        self.need_comma = true;
        self
    }

    /// A key; the next value belongs to it.
    pub(crate) fn key(&mut self, key: &str) -> &mut Self {
        self.sep();
        self.buf.push('"');
        self.buf.push_str(key);
        self.buf.push_str("\":");
        self.need_comma = false;
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.sep();
        self.buf.push('"');
        for c in value.chars() {
            match c {
                '"' => self.buf.push_str("\\\""),
                '\\' => self.buf.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.buf, "\\u{:04x}", c as u32);
                }
                c => self.buf.push(c),
            }
        }
        self.buf.push('"');
        self.need_comma = true;
        self
    }

    /// Money: a string with 8 decimals.
    pub(crate) fn decimal(&mut self, units: i64) -> &mut Self {
        self.sep();
        self.buf.push('"');
        write_units(&mut self.buf, units, 8);
        self.buf.push('"');
        self.need_comma = true;
        self
    }

    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.sep();
        self.buf.push_str(itoa::Buffer::new().format(value));
        self.need_comma = true;
        self
    }

    pub(crate) fn uint(&mut self, value: u64) -> &mut Self {
        self.sep();
        self.buf.push_str(itoa::Buffer::new().format(value));
        self.need_comma = true;
        self
    }

    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.sep();
        self.buf.push_str(if value { "true" } else { "false" });
        self.need_comma = true;
        self
    }

    pub(crate) fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("null");
        self.need_comma = true;
        self
    }

    pub(crate) fn field_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key).str(value)
    }

    pub(crate) fn field_decimal(&mut self, key: &str, units: i64) -> &mut Self {
        self.key(key).decimal(units)
    }

    pub(crate) fn field_int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key).int(value)
    }

    pub(crate) fn field_uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key).uint(value)
    }

    pub(crate) fn field_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).bool(value)
    }

    /// Ends a line of NDJSON (one document per line): the next value
    /// starts a new document, with no comma before it.
    pub(crate) fn newline(&mut self) -> &mut Self {
        self.buf.push('\n');
        self.need_comma = false;
        self
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf.into_bytes()
    }
}

/// The elements of a JSON array, as the bytes they were written with
/// (another instance's answer, joined into this one's), or `None` when
/// `json` is not an array whose strings and nesting close.
pub(crate) fn array_elements(json: &[u8]) -> Option<Vec<&[u8]>> {
    let json = json.trim_ascii();
    let inner = json.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let mut elements = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, &b) in inner.iter().enumerate() {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => depth += 1,
            (false, b']' | b'}') => depth = depth.checked_sub(1)?,
            (false, b',') if depth == 0 => {
                elements.push(inner[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_string || depth != 0 {
        return None;
    }
    let last = inner[start..].trim_ascii();
    if !last.is_empty() {
        elements.push(last);
    } else if !elements.is_empty() {
        return None;
    }
    match elements.iter().any(|e| e.is_empty()) {
        true => None,
        false => Some(elements),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_elements_split_at_the_top_level_only() {
        use super::array_elements;
        assert_eq!(
            array_elements(br#"[{"a":"x,]}","b":[1,2]} , 3,"q\\"]"#),
            Some(vec![&br#"{"a":"x,]}","b":[1,2]}"#[..], b"3", br#""q\\""#])
        );
        assert_eq!(array_elements(b"[]"), Some(vec![]));
        for bad in [&b"{}"[..], b"[1,]", b"[,1]", b"[\"]", b"[{]", b"[1]]"] {
            assert_eq!(array_elements(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    use super::*;

    #[test]
    fn writes_nested_values_with_commas() {
        let mut w = JsonWriter::default();
        w.begin_object()
            .field_str("a", "x\"y\n")
            .field_decimal("b", 150_000_000)
            .key("c")
            .begin_array();
        w.int(-1).uint(2).bool(true).null().end_array();
        w.key("d").begin_object().end_object().end_object();
        assert_eq!(
            w.buf,
            r#"{"a":"x\"y\u000a","b":"1.50000000","c":[-1,2,true,null],"d":{}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&w.buf).unwrap();
        assert_eq!(parsed["a"], "x\"y\n");
    }
}
