//! What a reply says so far, while its model streams it: the messages of the
//! reply object read from a prefix of its raw text, for `lemming chat` to show
//! a body as it grows.
//!
//! The text is untrusted and usually unfinished: prose before the object, a
//! code fence, a string or a `\u` escape cut in the middle. Reading never
//! fails; it returns what is certain so far and never half an escape.

/// A message of a reply being streamed, as far as it has arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// Its recipients, once the `to` value is complete (a name or a list of names).
    pub to: Option<Vec<String>>,
    /// Its body decoded so far (empty before the `body` key).
    pub body: String,
    /// Whether the body's string is closed: `body` is the whole body.
    pub body_done: bool,
}

impl Partial {
    /// Whether it is addressed to `name` (known once `to` is complete).
    pub fn is_to(&self, name: &str) -> bool {
        self.to.as_ref().is_some_and(|to| to.iter().any(|t| t == name))
    }
}

/// The messages seen so far in `raw`, a prefix of a model's reply text: those
/// of the first `"messages": [` array, in order. Text before it is skipped.
pub fn messages(raw: &str) -> Vec<Partial> {
    let Some(start) = array_start(raw) else { return Vec::new() };
    let mut r = Reader { s: raw.as_bytes(), i: start };
    let mut out = Vec::new();
    loop {
        r.ws();
        match r.peek() {
            Some(b'{') => {
                r.i += 1;
                let mut m = Partial::default();
                let closed = r.message(&mut m);
                out.push(m);
                if !closed {
                    return out;
                }
            }
            Some(b',') => r.i += 1,
            // `]`, the end of the text, or anything that is not a message.
            _ => return out,
        }
    }
}

/// Where the value of the first `"messages"` key that holds an array begins
/// (just after its `[`).
fn array_start(raw: &str) -> Option<usize> {
    const KEY: &str = "\"messages\"";
    let mut from = 0;
    while let Some(at) = raw[from..].find(KEY) {
        let after = from + at + KEY.len();
        let rest = raw[after..].trim_start();
        if let Some(rest) = rest.strip_prefix(':') {
            let rest = rest.trim_start();
            if let Some(rest) = rest.strip_prefix('[') {
                return Some(raw.len() - rest.len());
            }
        }
        from = after;
    }
    None
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Reads the pairs of a message object (after its `{`) into `m`.
    /// Returns whether the object closed.
    fn message(&mut self, m: &mut Partial) -> bool {
        loop {
            self.ws();
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    return true;
                }
                Some(b',') => self.i += 1,
                Some(b'"') => {
                    let (key, done) = self.string();
                    if !done {
                        return false;
                    }
                    self.ws();
                    if self.peek() != Some(b':') {
                        return false;
                    }
                    self.i += 1;
                    self.ws();
                    match key.as_str() {
                        "body" if self.peek() == Some(b'"') => {
                            let (body, done) = self.string();
                            m.body = body;
                            m.body_done = done;
                            if !done {
                                return false;
                            }
                        }
                        "to" => {
                            let (to, done) = self.to();
                            if !done {
                                return false;
                            }
                            m.to = Some(to);
                        }
                        _ => {
                            if !self.skip_value() {
                                return false;
                            }
                        }
                    }
                }
                _ => return false,
            }
        }
    }

    /// A `to` value: a string or an array of strings (other items are skipped).
    fn to(&mut self) -> (Vec<String>, bool) {
        match self.peek() {
            Some(b'"') => {
                let (s, done) = self.string();
                (vec![s], done)
            }
            Some(b'[') => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    self.ws();
                    match self.peek() {
                        Some(b']') => {
                            self.i += 1;
                            return (out, true);
                        }
                        Some(b',') => self.i += 1,
                        Some(b'"') => {
                            let (s, done) = self.string();
                            if !done {
                                return (out, false);
                            }
                            out.push(s);
                        }
                        Some(_) => {
                            if !self.skip_value() {
                                return (out, false);
                            }
                        }
                        None => return (out, false),
                    }
                }
            }
            _ => (Vec::new(), self.skip_value()),
        }
    }

    /// A string (at its `"`), decoded as far as it goes. Returns it and
    /// whether it closed. A cut escape is left out whole.
    fn string(&mut self) -> (String, bool) {
        self.i += 1;
        let mut out = String::new();
        let mut plain = self.i;
        loop {
            let Some(b) = self.peek() else {
                out.push_str(&String::from_utf8_lossy(&self.s[plain..self.i]));
                return (out, false);
            };
            match b {
                b'"' => {
                    out.push_str(&String::from_utf8_lossy(&self.s[plain..self.i]));
                    self.i += 1;
                    return (out, true);
                }
                b'\\' => {
                    out.push_str(&String::from_utf8_lossy(&self.s[plain..self.i]));
                    match self.escape() {
                        Some(c) => out.push(c),
                        None => return (out, false),
                    }
                    plain = self.i;
                }
                _ => self.i += 1,
            }
        }
    }

    /// An escape (at its `\`): the char it stands for, or `None` when the
    /// text ends inside it (the reader then stays at the `\`).
    fn escape(&mut self) -> Option<char> {
        let start = self.i;
        let c = match *self.s.get(self.i + 1)? {
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'u' => {
                let hi = self.hex4(self.i + 2)?;
                self.i += 6;
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: its low half must follow, as `\uDC00`..`\uDFFF`.
                    if self.s.len() < self.i + 6 {
                        self.i = start;
                        return None;
                    }
                    if self.s[self.i] == b'\\' && self.s[self.i + 1] == b'u' {
                        let Some(lo) = self.hex4(self.i + 2) else {
                            self.i = start;
                            return None;
                        };
                        if (0xDC00..0xE000).contains(&lo) {
                            self.i += 6;
                            let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            return Some(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                    }
                    return Some('\u{FFFD}');
                }
                return Some(char::from_u32(hi).unwrap_or('\u{FFFD}'));
            }
            // `\"`, `\\`, `\/`, and any other char as itself.
            other => other as char,
        };
        self.i += 2;
        Some(c)
    }

    /// The 4 hex digits at `at`, or `None` when the text ends first (or they are not hex).
    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.s.get(at..at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(text, 16).ok()
    }

    /// Skips a value of any kind. Returns whether it ended within the text.
    fn skip_value(&mut self) -> bool {
        match self.peek() {
            None => false,
            Some(b'"') => self.string().1,
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                while let Some(b) = self.peek() {
                    match b {
                        b'"' => {
                            if !self.string().1 {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                false
            }
            Some(_) => {
                // A number, `true`, `false` or `null`: up to the next delimiter.
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                        return true;
                    }
                    self.i += 1;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(raw: &str) -> Vec<String> {
        messages(raw).into_iter().map(|m| m.body).collect()
    }

    #[test]
    fn every_prefix_of_a_reply_gives_what_has_arrived() {
        let raw = r#"{"messages":[{"to":"human","body":"Hello, world"}]}"#;
        assert!(messages(&raw[..12]).is_empty(), "no array yet");
        let cut = raw.find("Hel").unwrap() + 3;
        assert_eq!(
            messages(&raw[..cut]),
            [Partial { to: Some(vec!["human".into()]), body: "Hel".into(), body_done: false }]
        );
        let cut = raw.find("\"body").unwrap();
        assert_eq!(messages(&raw[..cut]), [Partial { to: Some(vec!["human".into()]), ..Partial::default() }]);
        let cut = raw.find("man\"").unwrap();
        assert_eq!(messages(&raw[..cut]), [Partial::default()], "`to` is not known while it is cut");
        let all = messages(raw);
        assert_eq!(all, [Partial { to: Some(vec!["human".into()]), body: "Hello, world".into(), body_done: true }]);
        // Each prefix's body is a prefix of the next one's.
        let mut last = String::new();
        for end in 0..=raw.len() {
            let b = bodies(&raw[..end]).into_iter().next().unwrap_or_default();
            assert!(b.starts_with(&last), "{end}: {b:?} after {last:?}");
            last = b;
        }
    }

    #[test]
    fn prose_and_a_code_fence_before_the_object_are_skipped() {
        let raw = "Sure! Here are the \"messages\": {as you asked}.\n```json\n{\"notes\": \"a [\\\"messages\\\"]\", \"messages\" : [ {\"to\": [\"human\", \"planner\"], \"priority\": {\"x\": [1, \"]\"]}, \"body\": \"two\"}, {\"body\": \"no to";
        let m = messages(raw);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].to, Some(vec!["human".to_string(), "planner".to_string()]));
        assert!(m[0].is_to("planner") && !m[1].is_to("human"));
        assert_eq!((m[0].body.as_str(), m[0].body_done), ("two", true));
        assert_eq!((m[1].body.as_str(), m[1].body_done, &m[1].to), ("no to", false, &None));
    }

    #[test]
    fn escapes_are_decoded_and_never_output_by_half() {
        let raw = r#"{"messages":[{"to":"human","body":"a\"b\\c\nd\u00e9e\ud83d\ude00f\/g"}]}"#;
        assert_eq!(bodies(raw), ["a\"b\\c\nd\u{e9}e\u{1F600}f/g"]);
        let start = raw.find("a\\\"").unwrap();
        let expected_prefixes = ["a\"b\\c\nd\u{e9}e\u{1F600}f/g"];
        let mut last = String::new();
        for end in start..raw.len() {
            let b = bodies(&raw[..end]).into_iter().next().unwrap_or_default();
            assert!(b.starts_with(&last), "{end}: {b:?} after {last:?}");
            assert!(expected_prefixes[0].starts_with(&b), "{end}: {b:?} is not a prefix of the body");
            last = b;
        }
        // Cut inside `\u00e9` and inside the surrogate pair: nothing of the escape shows.
        let cut = raw.find("\\u00e9").unwrap() + 4;
        assert_eq!(bodies(&raw[..cut]), ["a\"b\\c\nd"]);
        let cut = raw.find("\\ude00").unwrap() + 2;
        assert_eq!(bodies(&raw[..cut]), ["a\"b\\c\nd\u{e9}e"]);
        let cut = raw.find("\\ude00").unwrap();
        assert_eq!(bodies(&raw[..cut]), ["a\"b\\c\nd\u{e9}e"], "a high surrogate waits for its low half");
        // A lone surrogate or a bad escape is a replacement char, never a panic.
        assert_eq!(bodies(r#"{"messages":[{"body":"x\ud83dy\uzzzz"#), ["x\u{FFFD}y"]);
    }

    #[test]
    fn anything_else_gives_nothing_and_never_panics() {
        for raw in ["", "hello", "{\"messages\":\"no\"}", "{\"messages\":[1,2]}", "\"messages\":[{\"body\":é"] {
            let m = messages(raw);
            assert!(m.iter().all(|m| m.body.is_empty()), "{raw}: {m:?}");
        }
        assert_eq!(bodies("{\"messages\":[{\"body\":\"é\u{1F600}\"}]}"), ["é\u{1F600}"]);
    }
}
