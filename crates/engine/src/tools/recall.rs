//! `recall {query}`: searches the agent's memory (keys and values).
//!
//! Memory is read through [`crate::memory`], which owns its format; this only
//! filters and shows it: one `key: value` line per match, the value as
//! compact JSON, capped like every tool's output.

use serde_json::Value;

use super::files::{capped, check_args, required_string};
use super::{Ctx, Outcome};

/// Searches the calling agent's memory for `args.query`: every key whose
/// name or value contains it, ignoring case (an empty query lists them all).
pub fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    let query = match check_args("recall", args, &["query"]).and_then(|()| required_string(args, "query")) {
        Ok(q) => q,
        Err(e) => return Outcome::err("recall", e),
    };
    let needle = query.trim().to_lowercase();
    let (items, unreadable) = crate::memory::all_checked(&ctx.org.layout.memory_dir(ctx.agent));
    let max = ctx.org.settings.tools.max_entries;
    let mut matches = items.iter().filter(|(key, value)| {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        key.to_lowercase().contains(&needle) || text.to_lowercase().contains(&needle)
    });
    let mut out = String::new();
    let mut shown = 0;
    for (key, value) in matches.by_ref().take(max) {
        out.push_str(&format!("{key}: {value}\n"));
        shown += 1;
    }
    let more = matches.count();
    if shown == 0 {
        out = if items.is_empty() {
            "your memory is empty\n".to_string()
        } else {
            format!("no memory matches `{}`\n", crate::term::line(query))
        };
    }
    if more > 0 {
        out.push_str(&format!("… and {more} more (tools.max_entries is {max}); ask for something narrower\n"));
    }
    if !unreadable.is_empty() {
        out.push_str(&format!("({} key(s) could not be read and were left out)\n", unreadable.len()));
    }
    capped(ctx, "recall", &out, more > 0)
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Fixture;
    use serde_json::json;

    /// Sets memory keys the way a turn does, through memory.rs.
    fn remember(f: &Fixture, ops: &[serde_json::Value]) {
        let dir = f.org.layout.memory_dir("manager");
        let (plan, errors) = crate::memory::plan(&dir, ops);
        assert!(errors.is_empty(), "{errors:?}");
        let tmp = f.org.layout.root.join("tmp-test");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut b = crate::fsx::Batch::new();
        crate::memory::apply(&mut b, &dir, &tmp, &plan).unwrap();
        b.commit(&f.org.layout.root).unwrap();
    }

    fn recall(f: &Fixture, query: &str) -> super::Outcome {
        f.call("recall", json!({"query": query}))
    }

    #[test]
    fn finds_keys_and_values_ignoring_case() {
        let f = Fixture::new();
        assert_eq!(recall(&f, "").output.as_deref(), Some("your memory is empty\n"));
        remember(
            &f,
            &[
                json!({"op":"set","key":"goal","value":"Ship the Beta by Friday"}),
                json!({"op":"set","key":"beta-testers","value":["ann","bo"]}),
                json!({"op":"set","key":"budget","value":{"q3": 1200}}),
            ],
        );
        let o = recall(&f, "BETA");
        assert_eq!(o.output.as_deref(), Some("beta-testers: [\"ann\",\"bo\"]\ngoal: \"Ship the Beta by Friday\"\n"));
        assert_eq!(recall(&f, "q3").output.as_deref(), Some("budget: {\"q3\":1200}\n"));
        assert_eq!(recall(&f, "").output.as_deref().unwrap().lines().count(), 3);
        assert_eq!(recall(&f, "nothing like it").output.as_deref(), Some("no memory matches `nothing like it`\n"));
        // Another agent's memory is not searched.
        let other = f.org.layout.memory_dir("planner");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("secret.json"), "\"planner only\"").unwrap();
        assert!(recall(&f, "planner").output.unwrap().starts_with("no memory matches"));
    }

    #[test]
    fn caps_the_matches_and_reports_unreadable_keys() {
        let mut f = Fixture::new();
        let ops: Vec<_> = (0..5).map(|i| json!({"op":"set","key":format!("k{i}"),"value":i})).collect();
        remember(&f, &ops);
        std::fs::write(f.org.layout.memory_dir("manager").join("broken.json"), "{not json").unwrap();
        f.org.settings.tools.max_entries = 2;
        let o = recall(&f, "k");
        assert!(o.truncated);
        assert_eq!(
            o.output.as_deref(),
            Some(
                "k0: 0\nk1: 1\n… and 3 more (tools.max_entries is 2); ask for something narrower\n(1 key(s) could not \
                 be read and were left out)\n"
            )
        );
        f.org.settings.tools.max_output_bytes = 4;
        let o = recall(&f, "k");
        assert_eq!((o.output.as_deref(), o.truncated), (Some("k0: "), true));
    }

    #[test]
    fn its_argument_is_checked() {
        let f = Fixture::new();
        assert!(f.call("recall", json!({})).error.unwrap().contains("missing argument `query`"));
        assert!(f.call("recall", json!({"query": null})).error.unwrap().contains("missing argument `query`"));
        assert!(f.call("recall", json!({"query": ["a"]})).error.unwrap().contains("must be a string"));
        assert!(f.call("recall", json!({"q": "a"})).error.unwrap().contains("unknown argument `q`"));
    }
}
