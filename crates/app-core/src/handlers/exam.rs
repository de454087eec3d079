//! The `exam` handler: reads a score sheet (CSV: `student_id,<q1>,<q2>,...`, one row per
//! student) into per-student totals and per-question averages.

use std::collections::HashMap;

use async_trait::async_trait;
use queue_core::{HandlerError, JobHandler, JobRecord, LimitClass};
use serde::Serialize;
use serde_json::Value;

use super::parse_payload;
use crate::payloads::ExamPayload;

/// Runs `exam` jobs; the result is `{"filename", "students": [{"student_id", "total"}],
/// "questions": [{"question", "average", "answered"}], "student_count"}`, in input order.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExamHandler;

/// One student's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudentTotal {
    /// The student.
    pub student_id: String,
    /// The sum of their scores; a missing score counts 0.
    pub total: f64,
}

/// One question's column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuestionStats {
    /// The column's header.
    pub question: String,
    /// The mean over the students who have a score; `None` when nobody has one.
    pub average: Option<f64>,
    /// How many students have a score.
    pub answered: usize,
}

/// A parsed score sheet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExamSummary {
    /// Per student, in input order.
    pub students: Vec<StudentTotal>,
    /// Per question, in column order.
    pub questions: Vec<QuestionStats>,
}

/// One CSV record and the line it starts on (1-based), for error messages.
struct Record {
    line: usize,
    fields: Vec<String>,
}

fn skip_blanks(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while matches!(chars.peek(), Some(' ' | '\t')) {
        chars.next();
    }
}

/// RFC 4180, leniently: `,` separates fields, `"` quotes a field (which may then hold commas,
/// newlines and `""` for a quote), `\n`, `\r\n` or `\r` ends a record. Blanks around fields are
/// dropped, and so are blank lines.
fn parse_csv(text: &str) -> Result<Vec<Record>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut blank = true;
        loop {
            skip_blanks(&mut chars);
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                blank = false;
                let open_line = line;
                loop {
                    match chars.next() {
                        None => return Err(format!("line {open_line}: unterminated quoted field")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            value.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            value.push(c);
                        }
                    }
                }
                skip_blanks(&mut chars);
                if let Some(c) = chars.peek().filter(|c| !matches!(c, ',' | '\n' | '\r')) {
                    return Err(format!("line {line}: unexpected {c:?} after a closing quote"));
                }
            } else {
                while let Some(&c) = chars.peek().filter(|c| !matches!(c, ',' | '\n' | '\r')) {
                    value.push(c);
                    chars.next();
                }
                value.truncate(value.trim_end().len());
                blank &= value.is_empty();
            }
            fields.push(value);
            // After a field only a separator, a line end or the end of the text can follow.
            match chars.next() {
                Some(',') => blank = false,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some(_) => {
                    line += 1;
                    break;
                }
                None => break,
            }
        }
        if !blank {
            records.push(Record { line: start_line, fields });
        }
    }
    Ok(records)
}

/// Reads a score sheet. A header `student_id,<q1>,...` comes first; each row holds a student id
/// and one score per question. An empty cell is a missing score: 0 in the student's total, left
/// out of the question's average.
///
/// # Errors
/// A message naming the line (and the column, for a bad cell): a malformed CSV, a bad header, a
/// row with the wrong number of fields, an empty or duplicate student id, a score that is not a
/// number, or no student rows at all.
pub fn parse_exam(csv: &str) -> Result<ExamSummary, String> {
    let records = parse_csv(csv)?;
    let Some((header, rows)) = records.split_first() else {
        return Err("the file is empty; expected a header row student_id,<question>,...".into());
    };
    let first = header.fields[0].trim().to_ascii_lowercase().replace([' ', '-'], "_");
    if first != "student_id" {
        return Err(format!(
            "line {}: the first column must be \"student_id\", got {:?}",
            header.line, header.fields[0]
        ));
    }
    let names = &header.fields[1..];
    if names.is_empty() {
        return Err(format!("line {}: no question columns after \"student_id\"", header.line));
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("line {}: question column {} has no name", header.line, i + 1));
        }
        if names[..i].contains(name) {
            return Err(format!("line {}: duplicate question column {name:?}", header.line));
        }
    }
    if rows.is_empty() {
        return Err("no student rows after the header".into());
    }

    let mut sums = vec![0.0_f64; names.len()];
    let mut answered = vec![0_usize; names.len()];
    let mut students = Vec::with_capacity(rows.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    for row in rows {
        if row.fields.len() != header.fields.len() {
            return Err(format!(
                "line {}: expected {} fields (student_id and {} question(s)), got {}",
                row.line,
                header.fields.len(),
                names.len(),
                row.fields.len()
            ));
        }
        let student_id = row.fields[0].as_str();
        if student_id.is_empty() {
            return Err(format!("line {}, column \"student_id\": the student id is empty", row.line));
        }
        if let Some(first_line) = seen.insert(student_id, row.line) {
            return Err(format!(
                "line {}: duplicate student {student_id:?} (first seen on line {first_line})",
                row.line
            ));
        }
        let mut total = 0.0;
        for (i, cell) in row.fields[1..].iter().enumerate() {
            if cell.is_empty() {
                continue;
            }
            let score = cell.parse::<f64>().ok().filter(|s| s.is_finite()).ok_or_else(|| {
                format!("line {}, column {:?}: {cell:?} is not a number", row.line, names[i])
            })?;
            total += score;
            sums[i] += score;
            answered[i] += 1;
        }
        students.push(StudentTotal { student_id: student_id.to_owned(), total });
    }
    let questions = names
        .iter()
        .zip(sums.iter().zip(&answered))
        .map(|(name, (&sum, &n))| QuestionStats {
            question: name.clone(),
            average: (n > 0).then(|| sum / n as f64),
            answered: n,
        })
        .collect();
    Ok(ExamSummary { students, questions })
}

#[async_trait]
impl JobHandler for ExamHandler {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        vec![LimitClass::Ocr, LimitClass::Llm]
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let exam: ExamPayload = parse_payload(job, "exam")?;
        let summary =
            parse_exam(&exam.csv).map_err(|e| HandlerError::permanent(format!("{}: {e}", exam.filename)))?;
        Ok(serde_json::json!({
            "filename": exam.filename,
            "student_count": summary.students.len(),
            "students": summary.students,
            "questions": summary.questions,
        }))
    }
}
