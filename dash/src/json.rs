//! A minimal JSON writer for the frames and reports (numbers, strings,
//! arrays, objects): the shapes are fixed and small, so no serializer.

use std::fmt::Write;

/// Appends JSON to a string.
#[derive(Default)]
pub struct Json {
    out: String,
    /// Whether the current array or object needs a comma before the next item.
    comma: Vec<bool>,
}

impl Json {
    /// An empty writer.
    pub fn new() -> Json {
        Json::default()
    }

    fn sep(&mut self) {
        if let Some(c) = self.comma.last_mut() {
            if *c {
                self.out.push(',');
            }
            *c = true;
        }
    }

    /// `{`
    pub fn open_object(&mut self) -> &mut Self {
        self.sep();
        self.out.push('{');
        self.comma.push(false);
        self
    }

    /// `}`
    pub fn close_object(&mut self) -> &mut Self {
        self.comma.pop();
        self.out.push('}');
        self
    }

    /// `[`
    pub fn open_array(&mut self) -> &mut Self {
        self.sep();
        self.out.push('[');
        self.comma.push(false);
        self
    }

    /// `]`
    pub fn close_array(&mut self) -> &mut Self {
        self.comma.pop();
        self.out.push(']');
        self
    }

    /// An object's key (the value follows).
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.sep();
        escape(&mut self.out, key);
        self.out.push(':');
        // The value that follows takes no comma.
        if let Some(c) = self.comma.last_mut() {
            *c = false;
        }
        self
    }

    /// An unsigned integer.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        self.sep();
        let _ = write!(self.out, "{v}");
        self
    }

    /// A number (non-finite ones as 0).
    pub fn num(&mut self, v: f64) -> &mut Self {
        self.sep();
        let v = if v.is_finite() { v } else { 0.0 };
        // Six significant decimals are plenty for seconds and rates.
        let _ = write!(self.out, "{}", (v * 1e6).round() / 1e6);
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.out.push_str("null");
        self
    }

    /// A string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.sep();
        escape(&mut self.out, v);
        self
    }

    /// `"key": uint`, and a comma after.
    pub fn field_uint(&mut self, key: &str, v: u64) -> &mut Self {
        self.key(key).uint(v);
        self.set_comma();
        self
    }

    /// `"key": num`, and a comma after.
    pub fn field_num(&mut self, key: &str, v: f64) -> &mut Self {
        self.key(key).num(v);
        self.set_comma();
        self
    }

    /// `"key": "str"`, and a comma after.
    pub fn field_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.key(key).str(v);
        self.set_comma();
        self
    }

    /// After a value that followed a key: the next item needs a comma.
    pub fn set_comma(&mut self) -> &mut Self {
        if let Some(c) = self.comma.last_mut() {
            *c = true;
        }
        self
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A JSON string literal; `<`, `>` and `&` escaped too, so that the text
/// can sit inside an HTML `<script>`.
fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_values_with_commas_and_escapes() {
        let mut j = Json::new();
        j.open_object().field_uint("a", 1).field_str("s", "x\"</script>");
        j.key("xs").open_array().uint(1).num(2.5).open_array().close_array().close_array().set_comma();
        j.field_num("n", f64::NAN).close_object();
        assert_eq!(j.finish(), r#"{"a":1,"s":"x\"\u003c/script\u003e","xs":[1,2.5,[]],"n":0}"#);
    }
}
