//! The `upload` handler: splits an assignment (plain text or Markdown, after OCR) into its
//! numbered questions.

use async_trait::async_trait;
use queue_core::{HandlerError, JobHandler, JobRecord, LimitClass};
use serde::Serialize;
use serde_json::{Value, json};

use super::parse_payload;
use crate::payloads::UploadPayload;

/// Runs `upload` jobs; the result is `{"filename", "questions": [{"number", "text"}],
/// "question_count", "preamble"}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadHandler;

/// One question of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    /// The number the document gives it.
    pub number: u32,
    /// Its text, lines joined with `\n`.
    pub text: String,
}

/// An assignment split into questions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assignment {
    /// The text before the first question (title, instructions), lines joined with `\n`.
    pub preamble: String,
    /// The questions, in document order.
    pub questions: Vec<Question>,
}

/// Words that may precede a question number (`Question 1:`, `Q1.`); longest first, because
/// `question` also starts with `q`.
const PREFIXES: [&str; 4] = ["question", "exercise", "problem", "q"];

/// Longest question number, in digits: longer numbers are more likely years (`2024. was...`).
const MAX_NUMBER_DIGITS: usize = 3;

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// The number and the rest of the line when `line` starts a question: leading whitespace,
/// Markdown heading marks and bold (`**`, `__`) allowed, then `1.`, `1)`, `Q1.`, `Q1:`,
/// `Question 1:` and the like. The delimiter must be followed by whitespace or the end of the
/// line, so `1.5 litres` is not a question.
fn question_start(line: &str) -> Option<(u32, &str)> {
    let mut s = line.trim_start();
    let after_hashes = s.trim_start_matches('#');
    if after_hashes.len() != s.len() {
        s = after_hashes.trim_start();
    }
    let bold = ["**", "__"].into_iter().find(|m| s.starts_with(m));
    if let Some(m) = bold {
        s = s[m.len()..].trim_start();
    }
    let mut prefixed = false;
    for word in PREFIXES {
        if let Some(rest) = strip_prefix_ignore_case(s, word) {
            let rest = rest.trim_start();
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                s = rest;
                prefixed = true;
                break;
            }
        }
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > MAX_NUMBER_DIGITS {
        return None;
    }
    let number: u32 = s[..digits].parse().ok()?;
    let mut rest = &s[digits..];
    let mut closed = false;
    if let Some(m) = bold
        && let Some(r) = rest.strip_prefix(m)
    {
        rest = r;
        closed = true;
    }
    match rest.chars().next() {
        Some('.' | ')') => rest = &rest[1..],
        Some(':') if prefixed => rest = &rest[1..],
        // `Question 1` alone (a heading), or `Q1 What...`: the word makes it unambiguous.
        None => {}
        Some(c) if prefixed && c.is_whitespace() => {}
        _ => return None,
    }
    if let Some(m) = bold
        && !closed
        && let Some(r) = rest.strip_prefix(m)
    {
        rest = r;
        closed = true;
    }
    if rest.starts_with(|c: char| !c.is_whitespace()) {
        return None;
    }
    let mut text = rest.trim();
    // `**1. The whole question in bold**`: drop the closing mark.
    if let Some(m) = bold
        && !closed
    {
        text = text.strip_suffix(m).unwrap_or(text).trim_end();
    }
    Some((number, text))
}

fn append_line(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
}

/// Splits `content` into a preamble and numbered questions. Non-empty lines that do not start a
/// question belong to the question before them (or to the preamble); lines inside Markdown code
/// fences never start a question.
#[must_use]
pub fn parse_assignment(content: &str) -> Assignment {
    let mut doc = Assignment::default();
    let mut in_fence = false;
    for raw in content.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fence = line.starts_with("```") || line.starts_with("~~~");
        let start = if in_fence || fence { None } else { question_start(line) };
        if fence {
            in_fence = !in_fence;
        }
        match (start, doc.questions.last_mut()) {
            (Some((number, text)), _) => doc.questions.push(Question { number, text: text.to_owned() }),
            (None, Some(q)) => append_line(&mut q.text, line),
            (None, None) => append_line(&mut doc.preamble, line),
        }
    }
    doc
}

#[async_trait]
impl JobHandler for UploadHandler {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        vec![LimitClass::Ocr, LimitClass::Llm]
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let upload: UploadPayload = parse_payload(job, "upload")?;
        let doc = parse_assignment(&upload.content);
        if doc.questions.is_empty() {
            return Err(HandlerError::permanent(format!(
                "no numbered questions found in {}",
                upload.filename
            )));
        }
        Ok(json!({
            "filename": upload.filename,
            "question_count": doc.questions.len(),
            "questions": doc.questions,
            "preamble": doc.preamble,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_numbering_style_starts_a_question() {
        let cases = [
            ("1. What is x?", 1, "What is x?"),
            ("  2) Solve y", 2, "Solve y"),
            ("Q3. Prove z", 3, "Prove z"),
            ("q4: Define w", 4, "Define w"),
            ("Question 5: Explain", 5, "Explain"),
            ("## 6. Heading question", 6, "Heading question"),
            ("**7.** Bold number", 7, "Bold number"),
            ("**Question 8**: Bold word", 8, "Bold word"),
            ("### Question 9", 9, ""),
            ("**10. All in bold**", 10, "All in bold"),
        ];
        for (line, number, text) in cases {
            assert_eq!(question_start(line), Some((number, text)), "{line:?}");
        }
    }

    #[test]
    fn lines_that_only_look_numbered_do_not_start_questions() {
        for line in ["1.5 litres of water", "2024. A year", "1 apple", "Questions 1", "# Title", "3:00 pm"] {
            assert_eq!(question_start(line), None, "{line:?}");
        }
    }
}
