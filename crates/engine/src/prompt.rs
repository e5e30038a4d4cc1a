//! The prompt an agent's model gets: a system part (who it is, who it may
//! write to, the reply contract) and a user part (memory summary, then unread
//! mail by priority then age).

use crate::message::Message;
use crate::resume::Resume;

/// The reply contract, as told to every model.
pub const CONTRACT: &str = r#"Reply with exactly one JSON object and nothing else:
{"messages":[{"to":"<agent>","body":"<text>","priority":"normal","reply_to":"<id or null>"}],
 "notes":"<private notes for your log>",
 "memory":[{"op":"set|append|merge|delete","key":"<key>","value":<json>}]}
Every key is optional. Write only to the agents listed above; other messages bounce.
Memory keys use a-z, 0-9, '_', '.', '-'."#;

/// Orders mail for the prompt: urgent first, then by age (creation time, then id).
pub fn order(mail: &mut [Message]) {
    mail.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id)));
}

/// Builds the system and user parts of the prompt.
pub fn build(resume: &Resume, turn: u64, may_send_to: &[String], memory: &str, mail: &[Message]) -> (String, String) {
    let mut system = format!(
        "You are {name}{title}, an agent in an organization run by lemming. Agents talk only by messages.\n",
        name = resume.name,
        title = if resume.title.is_empty() { String::new() } else { format!(" ({})", resume.title) },
    );
    if !resume.description.is_empty() {
        system.push_str(&format!("Role: {}\n", resume.description.trim()));
    }
    if !resume.instructions.trim().is_empty() {
        system.push_str(&format!("\nInstructions:\n{}\n", resume.instructions.trim()));
    }
    system.push_str(&format!(
        "\nYou may write to: {}\n\n{CONTRACT}\n",
        if may_send_to.is_empty() { "nobody".to_string() } else { may_send_to.join(", ") }
    ));
    let mut user = format!("Turn {turn}.\n\nYour memory:\n{memory}\n");
    if mail.is_empty() {
        user.push_str("You have no unread mail.\n");
    } else {
        user.push_str(&format!("Unread mail ({}):\n", mail.len()));
        for m in mail {
            user.push_str(&format!(
                "\n--- id: {} | from: {} | kind: {} | priority: {:?} | thread: {}{}{}\n{}\n",
                m.id,
                m.from,
                m.kind.as_str(),
                m.priority,
                m.thread,
                m.reply_to.as_ref().map(|r| format!(" | reply_to: {r}")).unwrap_or_default(),
                m.subject.as_ref().map(|s| format!(" | subject: {s}")).unwrap_or_default(),
                m.body
            ));
        }
    }
    (system, user)
}
