//! `calculate {expression}`: arithmetic, evaluated without any access to the world.
//!
//! A small recursive-descent parser over `f64`, written here rather than taken
//! from a crate: the expression crates (evalexpr and the like) are languages
//! with variables, strings and assignment that would have to be fenced in,
//! while this needs a few dozen lines and does only arithmetic. Expressions
//! are bounded in length and nesting, and a result that is not a finite
//! number (an overflow, the root of a negative number) is an error.
//!
//! ```text
//! expr    = term { ("+" | "-") term }
//! term    = unary { ("*" | "/" | "%") unary }
//! unary   = ("-" | "+") unary | power
//! power   = primary [ ("^" | "**") unary ]        (right-associative; -2^2 = -4)
//! primary = number | "(" expr ")" | constant | function "(" expr { "," expr } ")"
//! ```

use serde_json::Value;

use super::files::{check_args, required_string};
use super::Outcome;

/// The longest expression accepted, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 1000;

/// The deepest nesting accepted (parentheses, signs, powers and calls together).
pub const MAX_DEPTH: usize = 64;

/// The functions `calculate` knows, with how many arguments each takes
/// (`None`: one or more).
const FUNCTIONS: [(&str, Option<usize>); 10] = [
    ("sqrt", Some(1)),
    ("abs", Some(1)),
    ("min", None),
    ("max", None),
    ("round", None),
    ("floor", Some(1)),
    ("ceil", Some(1)),
    ("ln", Some(1)),
    ("log10", Some(1)),
    ("exp", Some(1)),
];

/// Evaluates `args.expression`.
pub fn run(args: &Value) -> Outcome {
    let done = check_args("calculate", args, &["expression"])
        .and_then(|()| required_string(args, "expression"))
        .and_then(evaluate);
    match done {
        Ok(v) => Outcome::ok("calculate", format_number(v), false),
        Err(e) => Outcome::err("calculate", e),
    }
}

/// The value of an arithmetic expression, or why it has none (positions
/// count characters from 1).
pub fn evaluate(expression: &str) -> Result<f64, String> {
    let chars: Vec<char> = expression.chars().collect();
    if chars.len() > MAX_EXPRESSION_CHARS {
        return Err(format!("the expression is {} characters long; the limit is {MAX_EXPRESSION_CHARS}", chars.len()));
    }
    let mut p = Parser { chars, pos: 0 };
    if p.peek().is_none() {
        return Err("the expression is empty".into());
    }
    let v = p.expr(0)?;
    match p.peek() {
        None => Ok(v),
        Some(')') => Err(p.error("unmatched `)`")),
        Some(',') => Err(p.error("unexpected `,` (write numbers without thousands separators)")),
        Some(c) => Err(p.error(&format!("unexpected `{c}`"))),
    }
}

/// A number as `calculate` shows it: rounded to 15 significant digits (so
/// that 0.1 + 0.2 is 0.3), whole numbers without a decimal point, very large
/// and very small ones in exponent form.
pub fn format_number(v: f64) -> String {
    let r: f64 = format!("{v:.14e}").parse().unwrap_or(v);
    let r = if r == 0.0 { 0.0 } else { r };
    if r.abs() >= 1e16 || (r != 0.0 && r.abs() < 1e-6) {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

/// The parser's state: the expression and where it is.
struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    /// The next character that is not white space (not consumed).
    fn peek(&mut self) -> Option<char> {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
        self.chars.get(self.pos).copied()
    }

    /// `what`, at the current position.
    fn error(&self, what: &str) -> String {
        format!("{what} at position {}", self.pos + 1)
    }

    /// Refuses nesting deeper than [`MAX_DEPTH`].
    fn deeper(&self, depth: usize) -> Result<usize, String> {
        if depth >= MAX_DEPTH {
            return Err(self.error(&format!("the expression is nested more than {MAX_DEPTH} deep")));
        }
        Ok(depth + 1)
    }

    /// `v` when it is a finite number; else an error for the operation at `at`.
    fn finite(&self, v: f64, at: usize) -> Result<f64, String> {
        if v.is_nan() {
            Err(format!("the result is not a real number at position {}", at + 1))
        } else if v.is_infinite() {
            Err(format!("the result is too large (overflow) at position {}", at + 1))
        } else {
            Ok(v)
        }
    }

    fn expr(&mut self, depth: usize) -> Result<f64, String> {
        let mut v = self.term(depth)?;
        loop {
            let next = self.peek();
            let at = self.pos;
            match next {
                Some('+') => {
                    self.pos += 1;
                    let rhs = self.term(depth)?;
                    v = self.finite(v + rhs, at)?;
                }
                Some('-' | '−') => {
                    self.pos += 1;
                    let rhs = self.term(depth)?;
                    v = self.finite(v - rhs, at)?;
                }
                _ => return Ok(v),
            }
        }
    }

    fn term(&mut self, depth: usize) -> Result<f64, String> {
        let mut v = self.unary(depth)?;
        loop {
            let Some(op @ ('*' | '×' | '/' | '÷' | '%')) = self.peek() else { return Ok(v) };
            let at = self.pos;
            self.pos += 1;
            let rhs = self.unary(depth)?;
            v = match op {
                '*' | '×' => v * rhs,
                _ if rhs == 0.0 => {
                    let what = if op == '%' { "remainder of a division by zero" } else { "division by zero" };
                    return Err(format!("{what} at position {}", at + 1));
                }
                '%' => v % rhs,
                _ => v / rhs,
            };
            v = self.finite(v, at)?;
        }
    }

    fn unary(&mut self, depth: usize) -> Result<f64, String> {
        match self.peek() {
            Some('-' | '−') => {
                let depth = self.deeper(depth)?;
                self.pos += 1;
                Ok(-self.unary(depth)?)
            }
            Some('+') => {
                let depth = self.deeper(depth)?;
                self.pos += 1;
                self.unary(depth)
            }
            _ => self.power(depth),
        }
    }

    fn power(&mut self, depth: usize) -> Result<f64, String> {
        let base = self.primary(depth)?;
        let op_len = match self.peek() {
            Some('^') => 1,
            Some('*') if self.chars.get(self.pos + 1) == Some(&'*') => 2,
            _ => return Ok(base),
        };
        let at = self.pos;
        let depth = self.deeper(depth)?;
        self.pos += op_len;
        let exponent = self.unary(depth)?;
        self.finite(base.powf(exponent), at)
    }

    fn primary(&mut self, depth: usize) -> Result<f64, String> {
        match self.peek() {
            None => Err(self.error("the expression ends too soon: a number or `(` is missing")),
            Some('(') => {
                let depth = self.deeper(depth)?;
                self.pos += 1;
                let v = self.expr(depth)?;
                self.close()?;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.name(depth),
            Some(c) => Err(self.error(&format!("unexpected `{c}` where a number was expected"))),
        }
    }

    /// Consumes a `)`, or says it is missing.
    fn close(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(&format!("expected `)` but found `{c}`"))),
            None => Err(self.error("a `)` is missing")),
        }
    }

    /// A decimal number: digits, an optional fraction and an optional exponent (`1.5e3`).
    fn number(&mut self) -> Result<f64, String> {
        let start = self.pos;
        let digits = |p: &mut Parser| {
            while p.chars.get(p.pos).is_some_and(char::is_ascii_digit) {
                p.pos += 1;
            }
        };
        digits(self);
        if self.chars.get(self.pos) == Some(&'.') {
            self.pos += 1;
            digits(self);
        }
        if matches!(self.chars.get(self.pos), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.chars.get(self.pos + 1), Some('+' | '-')));
            if self.chars.get(self.pos + 1 + sign).is_some_and(char::is_ascii_digit) {
                self.pos += 1 + sign;
                digits(self);
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        match text.parse::<f64>() {
            Ok(v) => self.finite(v, start),
            Err(_) => {
                self.pos = start;
                Err(self.error(&format!("`{text}` is not a number")))
            }
        }
    }

    /// A constant (`pi`, `e`) or a function call.
    fn name(&mut self, depth: usize) -> Result<f64, String> {
        let start = self.pos;
        while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect::<String>().to_ascii_lowercase();
        let known = || {
            let mut all: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
            all.extend(["pi", "e"]);
            all.join(", ")
        };
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
            return match name.as_str() {
                "pi" => Ok(std::f64::consts::PI),
                "e" => Ok(std::f64::consts::E),
                _ => {
                    self.pos = start;
                    Err(self.error(&format!("unknown name `{name}` (known: {})", known())))
                }
            };
        };
        if self.peek() != Some('(') {
            return Err(self.error(&format!("`{name}` needs its arguments in parentheses, as in {name}(2)")));
        }
        let depth = self.deeper(depth)?;
        self.pos += 1;
        let mut args = vec![self.expr(depth)?];
        while self.peek() == Some(',') {
            self.pos += 1;
            args.push(self.expr(depth)?);
        }
        self.close()?;
        let wanted = match (name.as_str(), arity) {
            ("round", _) => args.len() <= 2,
            (_, Some(n)) => args.len() == n,
            (_, None) => true,
        };
        if !wanted {
            let takes = if name == "round" { "1 or 2 arguments".to_string() } else { "1 argument".to_string() };
            return Err(format!("{name} takes {takes}, not {} (at position {})", args.len(), start + 1));
        }
        let x = args[0];
        let v = match name.as_str() {
            "sqrt" if x < 0.0 => return Err(format!("sqrt of a negative number at position {}", start + 1)),
            "ln" | "log10" if x <= 0.0 => {
                return Err(format!("{name} of a number that is not positive at position {}", start + 1))
            }
            "sqrt" => x.sqrt(),
            "abs" => x.abs(),
            "min" => args.iter().copied().fold(f64::INFINITY, f64::min),
            "max" => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "round" => match args.get(1) {
                None => x.round(),
                Some(&d) if d.fract() == 0.0 && (-15.0..=15.0).contains(&d) => {
                    let scale = 10f64.powi(d as i32);
                    (x * scale).round() / scale
                }
                Some(_) => {
                    return Err(format!(
                        "round's second argument (the digits to keep) must be a whole number from -15 to 15 \
                         (at position {})",
                        start + 1
                    ))
                }
            },
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "ln" => x.ln(),
            "log10" => x.log10(),
            _ => x.exp(),
        };
        self.finite(v, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(e: &str) -> String {
        format_number(evaluate(e).unwrap_or_else(|err| panic!("{e}: {err}")))
    }

    fn err(e: &str) -> String {
        evaluate(e).map(|v| panic!("{e} gave {v}")).unwrap_err()
    }

    #[test]
    fn precedence_associativity_and_signs() {
        assert_eq!(ok("1 + 2 * 3"), "7");
        assert_eq!(ok("(1 + 2) * 3"), "9");
        assert_eq!(ok("10 - 2 - 3"), "5");
        assert_eq!(ok("100 / 10 / 5"), "2");
        assert_eq!(ok("2 ^ 3 ^ 2"), "512");
        assert_eq!(ok("2 ** 10"), "1024");
        assert_eq!(ok("-2 ^ 2"), "-4");
        assert_eq!(ok("(-2) ^ 2"), "4");
        assert_eq!(ok("2 ^ -1"), "0.5");
        assert_eq!(ok("--3"), "3");
        assert_eq!(ok("+3 - -3"), "6");
        assert_eq!(ok("7 % 3 * 2"), "2");
        assert_eq!(ok("-7 % 3"), "-1");
        assert_eq!(ok("3 × 4 ÷ 2 − 1"), "5");
    }

    #[test]
    fn numbers_functions_and_constants() {
        assert_eq!(ok(".5 + 1.25"), "1.75");
        assert_eq!(ok("1.5e3 + 2E-1"), "1500.2");
        assert_eq!(ok("0.1 + 0.2"), "0.3");
        assert_eq!(ok("1 / 3"), "0.333333333333333");
        assert_eq!(ok("1e20"), "1e20");
        assert_eq!(ok("1 / 1e7"), "1e-7");
        assert_eq!(ok("0 * -1"), "0");
        assert_eq!(ok("sqrt(16) + abs(-2)"), "6");
        assert_eq!(ok("min(3, 1, 2) + max(4, 9)"), "10");
        assert_eq!(ok("round(2.5) + round(3.14159, 2)"), "6.14");
        assert_eq!(ok("round(1234, -2)"), "1200");
        assert_eq!(ok("floor(2.7) + ceil(2.1)"), "5");
        assert_eq!(ok("ln(e) + log10(1000) + exp(0)"), "5");
        assert_eq!(ok("2 * PI"), ok("2 * pi"));
        assert_eq!(ok("Sqrt(4)"), "2");
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(err("1 / 0"), "division by zero at position 3");
        assert_eq!(err("1 / (2 - 2)"), "division by zero at position 3");
        assert_eq!(err("5 % 0"), "remainder of a division by zero at position 3");
        assert_eq!(err("2 + * 3"), "unexpected `*` where a number was expected at position 5");
        assert_eq!(err("(1 + 2"), "a `)` is missing at position 7");
        assert_eq!(err("1 + 2)"), "unmatched `)` at position 6");
        assert_eq!(err("1,000 + 1"), "unexpected `,` (write numbers without thousands separators) at position 2");
        assert_eq!(err("2 3"), "unexpected `3` at position 3");
        assert_eq!(err(""), "the expression is empty");
        assert_eq!(err("  "), "the expression is empty");
        assert_eq!(err("1 +"), "the expression ends too soon: a number or `(` is missing at position 4");
        assert!(err("foo(1)").starts_with("unknown name `foo` (known: sqrt, abs,"), "{}", err("foo(1)"));
        assert!(err("x + 1").contains("unknown name `x`"));
        assert_eq!(err("sqrt 4"), "`sqrt` needs its arguments in parentheses, as in sqrt(2) at position 6");
        assert_eq!(err("sqrt(1, 2)"), "sqrt takes 1 argument, not 2 (at position 1)");
        assert_eq!(err("round(1, 2, 3)"), "round takes 1 or 2 arguments, not 3 (at position 1)");
        assert!(err("round(1, 0.5)").contains("whole number"));
        assert_eq!(err("sqrt(-1)"), "sqrt of a negative number at position 1");
        assert_eq!(err("ln(0)"), "ln of a number that is not positive at position 1");
        assert_eq!(err("(-8) ^ (1/3)"), "the result is not a real number at position 6");
        assert_eq!(err("1.2.3"), "unexpected `.` at position 4");
        assert_eq!(err("\"1\""), "unexpected `\"` where a number was expected at position 1");
    }

    #[test]
    fn results_that_are_not_finite_are_refused() {
        assert_eq!(err("10 ^ 400"), "the result is too large (overflow) at position 4");
        assert!(err("9 ^ 9 ^ 9").contains("overflow"));
        assert!(err("1e308 * 10").contains("overflow"));
        assert!(err("1e999").contains("overflow"));
        assert!(err("exp(1000)").contains("overflow"));
    }

    #[test]
    fn length_and_depth_are_bounded() {
        let long = format!("1{}", " + 1".repeat(300));
        assert!(err(&long).contains("the limit is 1000"));
        assert_eq!(ok(&format!("1{}", " + 1".repeat(200))), "201");
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).contains("nested more than 64 deep"));
        assert!(err(&format!("{}1", "-".repeat(500))).contains("nested more than 64 deep"));
        assert!(err(&format!("2{}", "^2".repeat(400))).contains("nested more than 64 deep"));
        assert_eq!(ok(&format!("{}1{}", "(".repeat(60), ")".repeat(60))), "1");
    }

    #[test]
    fn run_reads_its_argument() {
        assert_eq!(run(&json!({"expression": "6 * 7"})).output.as_deref(), Some("42"));
        assert!(run(&json!({})).error.unwrap().contains("missing argument `expression`"));
        assert!(run(&json!({"expression": 42})).error.unwrap().contains("must be a string"));
        assert!(run(&json!({"expression": "1", "x": 1})).error.unwrap().contains("unknown argument `x`"));
        let f = super::super::files::fixture::Fixture::new();
        let o = f.call("calculate", json!({"expression": "2 ^ 8"}));
        assert_eq!((o.ok, o.output.as_deref()), (true, Some("256")));
        let o = f.call("calculate", json!({"expression": "1/0"}));
        assert_eq!(o.error.as_deref(), Some("division by zero at position 2"));
    }
}
