//! The JSON payloads stored on job records, and the two pure functions derived from a chat
//! request: its coalescing fingerprint and its default lane (SPEC §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One message of a conversation, as the LLM provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// The payload of a `chat` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatPayload {
    /// Who is chatting: `student`, `teacher`, or anything else (a lane of its own).
    pub role: String,
    /// The student, when `role` is `student`.
    #[serde(default)]
    pub student_id: Option<String>,
    /// The teacher, when `role` is `teacher`.
    #[serde(default)]
    pub teacher_id: Option<String>,
    /// The conversation within the user's chats (`main` when absent).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The conversation so far, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Ids of files attached to the request.
    #[serde(default)]
    pub attachments: Vec<String>,
}

impl ChatPayload {
    /// The message a reply answers: the last `user` message, or the last message at all when no
    /// message has that role.
    #[must_use]
    pub fn last_user_message(&self) -> Option<&ChatMessage> {
        last_user_message(&self.messages)
    }

    /// This request's coalescing fingerprint; see [`fingerprint`].
    #[must_use]
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.messages, &self.attachments)
    }
}

/// The payload of an `upload` job: an assignment as plain text or Markdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadPayload {
    /// The uploaded file's name (shown in results and errors only).
    pub filename: String,
    /// The document's text (after OCR, for scans).
    pub content: String,
}

/// The payload of an `exam` job: a score sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamPayload {
    /// The uploaded file's name (shown in results only).
    pub filename: String,
    /// `student_id,<q1>,<q2>,...` then one row of scores per student.
    pub csv: String,
}

/// The payload of a `profile_update` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdatePayload {
    /// The student whose profile changes; also the profile's file name.
    pub student_id: String,
    /// Notes appended to the profile, in order.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Fields set on the profile, overwriting earlier values of the same keys.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

fn last_user_message(messages: &[ChatMessage]) -> Option<&ChatMessage> {
    messages.iter().rev().find(|m| m.role == "user").or_else(|| messages.last())
}

/// Separates the text from each attachment id in a fingerprint.
const FINGERPRINT_SEPARATOR: char = '\u{1f}';

/// Escapes the separator (and the escape itself) so that no message text or attachment id can
/// forge a separator: two fingerprints are equal only if their texts and id lists are.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            FINGERPRINT_SEPARATOR => out.push_str("\\x1f"),
            c => out.push(c),
        }
    }
}

/// The coalescing fingerprint of a chat request (SPEC §2): the last `user` message (the last
/// message at all if none is from the user) with whitespace collapsed to single spaces, trimmed
/// and lower-cased, plus the sorted attachment ids. Two requests coalesce only if both parts are
/// equal.
#[must_use]
pub fn fingerprint(messages: &[ChatMessage], attachments: &[String]) -> String {
    let text = last_user_message(messages).map_or_else(String::new, |m| {
        m.content.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
    });
    let mut ids: Vec<&str> = attachments.iter().map(String::as_str).collect();
    ids.sort_unstable();
    let mut out = String::with_capacity(text.len() + ids.iter().map(|s| s.len() + 1).sum::<usize>());
    push_escaped(&mut out, &text);
    // Each id is preceded (not separated) by the separator, so `[]` and `[""]` differ.
    for id in ids {
        out.push(FINGERPRINT_SEPARATOR);
        push_escaped(&mut out, id);
    }
    out
}

/// Python's `x or default`: an absent or empty value takes the default.
fn or_default<'a>(value: Option<&'a str>, default: &'a str) -> &'a str {
    value.filter(|s| !s.is_empty()).unwrap_or(default)
}

/// The lane of a chat request that names none, as the original derived it (SPEC §2):
/// `student:{student_id}:{session_id or "main"}`, `teacher:{teacher_id}:{session_id or "main"}`,
/// and for any other role `unknown:{session_id or "none"}:{request_id}`, a lane of its own.
///
/// The result is not validated: the caller turns it into a `LaneId`, which refuses ids with
/// forbidden characters. A student or teacher without an id gets an empty segment, which the
/// caller should have refused earlier.
#[must_use]
pub fn default_lane(
    role: &str,
    student_id: Option<&str>,
    teacher_id: Option<&str>,
    session_id: Option<&str>,
    request_id: &str,
) -> String {
    match role {
        "student" => format!("student:{}:{}", student_id.unwrap_or(""), or_default(session_id, "main")),
        "teacher" => format!("teacher:{}:{}", teacher_id.unwrap_or(""), or_default(session_id, "main")),
        _ => format!("unknown:{}:{request_id}", or_default(session_id, "none")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::new("user", text)
    }

    #[test]
    fn fingerprint_collapses_whitespace_and_case() {
        let a = fingerprint(&[user("  What   is\tA\nVector? ")], &[]);
        let b = fingerprint(&[user("what is a vector?")], &[]);
        assert_eq!(a, b);
        assert_eq!(a, "what is a vector?");
    }

    #[test]
    fn fingerprint_uses_the_last_user_message_not_the_last_message() {
        let msgs = [user("first"), user("Second"), ChatMessage::new("assistant", "reply")];
        assert_eq!(fingerprint(&msgs, &[]), fingerprint(&[user("second")], &[]));
    }

    #[test]
    fn fingerprint_falls_back_to_the_last_message_when_none_is_from_the_user() {
        let msgs = [ChatMessage::new("system", "be nice"), ChatMessage::new("assistant", "Hi")];
        assert_eq!(fingerprint(&msgs, &[]), "hi");
        assert_eq!(fingerprint(&[], &[]), "");
    }

    #[test]
    fn fingerprint_distinguishes_attachments_but_not_their_order() {
        let m = [user("see file")];
        let none = fingerprint(&m, &[]);
        let ab = fingerprint(&m, &["a".into(), "b".into()]);
        let ba = fingerprint(&m, &["b".into(), "a".into()]);
        let ac = fingerprint(&m, &["a".into(), "c".into()]);
        assert_eq!(ab, ba);
        assert_ne!(none, ab);
        assert_ne!(ab, ac);
    }

    #[test]
    fn fingerprint_parts_cannot_be_forged_by_separators_in_the_text() {
        let forged = fingerprint(&[user("hi\u{1f}a")], &[]);
        let real = fingerprint(&[user("hi")], &["a".into()]);
        assert_ne!(forged, real);
        assert_ne!(fingerprint(&[user("x")], &[]), fingerprint(&[user("x")], &[String::new()]));
        assert_ne!(
            fingerprint(&[user("x")], &["a,b".into()]),
            fingerprint(&[user("x")], &["a".into(), "b".into()])
        );
    }

    #[test]
    fn default_lanes_follow_the_original_shapes() {
        assert_eq!(default_lane("student", Some("s42"), None, None, "r1"), "student:s42:main");
        assert_eq!(default_lane("student", Some("s42"), None, Some("hw3"), "r1"), "student:s42:hw3");
        assert_eq!(default_lane("teacher", None, Some("t7"), Some(""), "r1"), "teacher:t7:main");
        assert_eq!(default_lane("teacher", None, Some("t7"), Some("x"), "r1"), "teacher:t7:x");
        assert_eq!(default_lane("guest", None, None, Some("s9"), "r1"), "unknown:s9:r1");
        assert_eq!(default_lane("", Some("s1"), None, None, "r2"), "unknown:none:r2");
    }

    #[test]
    fn chat_payload_defaults_optional_fields_and_refuses_unknown_ones() {
        let p: ChatPayload =
            serde_json::from_value(serde_json::json!({"role": "student", "messages": []})).unwrap();
        assert_eq!((p.student_id, p.attachments.len()), (None, 0));
        let err = serde_json::from_value::<ChatPayload>(
            serde_json::json!({"role": "student", "messages": [], "colour": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
