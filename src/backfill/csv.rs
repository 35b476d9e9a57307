//! Reading a backfill file: the spreadsheets operators export, as they export them.
//!
//! Columns are found by header name, case-insensitive and with accents ignored, under the
//! names Brazilian teams use (`lead_id`/`id`/`lead`, `name`/`nome`,
//! `phone`/`telefone`/`celular`/`whatsapp`, `email`/`e-mail`, `cpf`/`documento`); other
//! columns are ignored. `,` or `;` separated (whichever the header uses), UTF-8 with or without
//! a BOM or Windows-1252 (a file that is not valid UTF-8 is read as 1252), CRLF or LF, quoted
//! fields. Each data row becomes a [`BackfillRow`] or a [`RowProblem`]; only a file whose
//! header cannot be used fails as a whole ([`CsvError`]).
//!
//! Values stay as written: parsing phones, e-mails and CPFs (including a CPF whose leading
//! zeros a spreadsheet dropped) is the domain's job. One thing is decided here because it is
//! about spreadsheets, not CPFs: a number in scientific notation (`1,23457E+10`) has lost
//! digits and is refused, never guessed.

use std::fmt;

use crate::domain::LeadId;
use crate::domain::text::{MAX_FIELD_CHARS, clip};

/// Why a file cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("the file is empty")]
    Empty,
    #[error("no lead id column: the header needs one of lead_id, id, lead")]
    NoLeadIdColumn,
    #[error("no contact column: the header needs at least one of {CONTACT_NAMES}")]
    NoContactColumn,
    /// The header line itself is not CSV (no value quoted: a header is not personal data, but
    /// the reader's message may hold a whole line).
    #[error("the header line cannot be read")]
    BadHeader,
}

const CONTACT_NAMES: &str = "phone, telefone, celular, whatsapp, email, e-mail, cpf, documento";

/// Why one row was skipped. No variant holds a value from the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no lead id")]
    MissingLeadId,
    #[error("unusable lead id: {0}")]
    BadLeadId(&'static str),
    #[error("no phone, e-mail or CPF")]
    NoContact,
    /// `1.23457E+10`: the spreadsheet rounded the number; the digits are gone.
    #[error("CPF in scientific notation (digits lost by the spreadsheet): unusable")]
    CpfInScientificNotation,
    #[error("row has {found} fields, the header has {expected}")]
    FieldCount { expected: u64, found: u64 },
    #[error("row cannot be read as CSV")]
    Unreadable,
}

/// A row that was skipped, and where it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// The line in the file (the header is line 1), as a spreadsheet numbers it.
    pub line: u64,
    /// The lead id, when the row had a usable one (not personal data).
    pub lead_id: Option<LeadId>,
    pub problem: Problem,
}

/// One usable row. Values are trimmed and capped, otherwise as written; personal data, so
/// `Debug` shows none.
#[derive(Clone, PartialEq, Eq)]
pub struct BackfillRow {
    /// The line in the file (the header is line 1).
    pub line: u64,
    pub lead_id: LeadId,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// As written (`123.456.789-09`, `1234567890` without its leading zero): the domain pads
    /// and validates it.
    pub cpf: Option<String>,
}

impl fmt::Debug for BackfillRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackfillRow")
            .field("line", &self.line)
            .field("lead_id", &self.lead_id)
            .field("name", &self.name.is_some())
            .field("phone", &self.phone.is_some())
            .field("email", &self.email.is_some())
            .field("cpf", &self.cpf.is_some())
            .finish()
    }
}

/// What a header column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    LeadId,
    Name,
    Phone,
    Email,
    Cpf,
}

/// Lowercase, accents dropped, spaces/dashes/underscores dropped: `E-mail`, `Telefone `,
/// `LEAD_ID`, `Nº do lead` all compare by their letters.
fn fold(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            let base = match c {
                'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' => 'i',
                'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
                'ú' | 'ù' | 'û' | 'ü' => 'u',
                'ç' => 'c',
                ' ' | '-' | '_' | '.' => return None,
                c => c,
            };
            Some(base)
        })
        .collect()
}

fn column(header: &str) -> Option<Column> {
    match fold(header).as_str() {
        "leadid" | "id" | "lead" => Some(Column::LeadId),
        "name" | "nome" => Some(Column::Name),
        "phone" | "telefone" | "celular" | "whatsapp" => Some(Column::Phone),
        "email" => Some(Column::Email),
        "cpf" | "documento" => Some(Column::Cpf),
        _ => None,
    }
}

/// The file's text: UTF-8 (its BOM dropped), or Windows-1252 when it is not valid UTF-8
/// (what Excel on Windows writes for "CSV" without "UTF-8").
pub fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

/// Every line end as `\n`, the one [`Lines`] counts: a CR-only file (old Mac exports) would
/// otherwise be one long line 1 to it.
fn unix_line_ends(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// `;` when the header line has more of them than commas (Brazilian Excel), else `,`.
fn delimiter(text: &str) -> u8 {
    let header = text.lines().next().unwrap_or("");
    let count = |c| header.chars().filter(|&h| h == c).count();
    if count(';') > count(',') { b';' } else { b',' }
}

/// `1.23457E+10`, `1,23457E+10`, `5E10`: a number a spreadsheet printed in scientific
/// notation.
fn is_scientific(raw: &str) -> bool {
    let s = raw.trim();
    let Some((mantissa, exponent)) = s.split_once(['e', 'E']) else {
        return false;
    };
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    let mantissa_ok = !mantissa.is_empty()
        && mantissa.chars().any(|c| c.is_ascii_digit())
        && mantissa
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',');
    mantissa_ok && !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
}

/// The rows of a file, in order: each usable or why not.
pub type Rows = Vec<Result<BackfillRow, RowProblem>>;

/// Reads a whole file. Fails only when the header cannot be used.
pub fn read(bytes: &[u8]) -> Result<Rows, CsvError> {
    let text = unix_line_ends(decode(bytes));
    if text.trim().is_empty() {
        return Err(CsvError::Empty);
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter(&text))
        .has_headers(true)
        // A row with another number of fields is reported, not guessed at: with `;` files a
        // stray separator would shift every value into the wrong column.
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|_| CsvError::BadHeader)?.clone();
    // The first column of each kind wins.
    let mut at: [Option<usize>; 5] = [None; 5];
    for (i, name) in headers.iter().enumerate() {
        if let Some(c) = column(name) {
            at[c as usize].get_or_insert(i);
        }
    }
    if at[Column::LeadId as usize].is_none() {
        return Err(CsvError::NoLeadIdColumn);
    }
    if [Column::Phone, Column::Email, Column::Cpf]
        .iter()
        .all(|c| at[*c as usize].is_none())
    {
        return Err(CsvError::NoContactColumn);
    }
    let expected = headers.len() as u64;
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut lines = Lines::new(&text);
    loop {
        let before = reader.position().clone();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = lines.of(record.position().unwrap_or(&before));
                // A blank line at the end (or anywhere) is not a row.
                if record.iter().all(|v| v.trim().is_empty()) {
                    continue;
                }
                rows.push(row(&record, line, &at));
            }
            Err(e) => {
                let (line, problem) = match e.kind() {
                    csv::ErrorKind::UnequalLengths { pos, len, .. } => (
                        lines.of(pos.as_ref().unwrap_or(&before)),
                        Problem::FieldCount {
                            expected,
                            found: *len,
                        },
                    ),
                    _ => (lines.of(&before), Problem::Unreadable),
                };
                rows.push(Err(RowProblem {
                    line,
                    lead_id: None,
                    problem,
                }));
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                    // Anything else (I/O on an in-memory buffer, bad UTF-8 after decoding)
                    // cannot happen again on the next record; stop rather than loop.
                    break;
                }
            }
        }
    }
    Ok(rows)
}

/// The line a record starts on, as a spreadsheet numbers it (the header is line 1). Not the
/// reader's own line: it dates a record from the start of the blank lines it skipped before
/// it. Records come in order, so the count goes on from the last one.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    fn of(&mut self, position: &csv::Position) -> u64 {
        let mut start = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        // Blank lines the reader skipped belong to no record.
        while self.text.get(start) == Some(&b'\n') {
            start += 1;
        }
        if start >= self.at {
            let ends = self.text[self.at..start].iter().filter(|&&b| b == b'\n');
            self.line += ends.count() as u64;
            self.at = start;
        }
        self.line
    }
}

fn row(
    record: &csv::StringRecord,
    line: u64,
    at: &[Option<usize>; 5],
) -> Result<BackfillRow, RowProblem> {
    let get = |c: Column| {
        at[c as usize]
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| clip(v, MAX_FIELD_CHARS).trim_end().to_owned())
    };
    let problem = |lead_id, problem| {
        Err(RowProblem {
            line,
            lead_id,
            problem,
        })
    };
    let Some(raw_id) = get(Column::LeadId) else {
        return problem(None, Problem::MissingLeadId);
    };
    let lead_id = match LeadId::parse(&raw_id) {
        Ok(id) => id,
        Err(crate::domain::DomainError::InvalidLeadId(why)) => {
            return problem(None, Problem::BadLeadId(why));
        }
        Err(_) => return problem(None, Problem::MissingLeadId),
    };
    let cpf = get(Column::Cpf);
    if cpf.as_deref().is_some_and(is_scientific) {
        return problem(Some(lead_id), Problem::CpfInScientificNotation);
    }
    let (phone, email) = (get(Column::Phone), get(Column::Email));
    if phone.is_none() && email.is_none() && cpf.is_none() {
        return problem(Some(lead_id), Problem::NoContact);
    }
    Ok(BackfillRow {
        line,
        lead_id,
        name: get(Column::Name),
        phone,
        email,
        cpf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rows: &Rows) -> Vec<&BackfillRow> {
        rows.iter().filter_map(|r| r.as_ref().ok()).collect()
    }

    fn problems(rows: &Rows) -> Vec<(u64, Problem)> {
        rows.iter()
            .filter_map(|r| r.as_ref().err())
            .map(|p| (p.line, p.problem.clone()))
            .collect()
    }

    #[test]
    fn comma_file_with_english_headers() {
        let rows = read(b"lead_id,name,phone,email,cpf\nL1,Ana Lima,11912345678,ana@example.com,529.982.247-25\n").unwrap();
        let r = ok(&rows)[0];
        assert_eq!(r.line, 2);
        assert_eq!(r.lead_id.as_str(), "L1");
        assert_eq!(r.name.as_deref(), Some("Ana Lima"));
        assert_eq!(r.phone.as_deref(), Some("11912345678"));
        assert_eq!(r.email.as_deref(), Some("ana@example.com"));
        assert_eq!(r.cpf.as_deref(), Some("529.982.247-25"));
    }

    /// A case: its name, a file, how many usable rows, and the problems by line.
    type Case = (&'static str, Vec<u8>, usize, Vec<(u64, Problem)>);

    #[test]
    fn table_of_files() {
        let cases: Vec<Case> = vec![
            (
                "semicolons and Portuguese headers, accents and case ignored",
                "ID;Nome;Telefone;E-mail;Documento;Observação\nL1;Ana;(11) 91234-5678;;;x\nL2;Bia;;bia@example.com;;y\n"
                    .into(),
                2,
                vec![],
            ),
            (
                "semicolons with commas inside values",
                "lead;nome;celular\nL1;Lima, Ana;11912345678\n".into(),
                1,
                vec![],
            ),
            (
                "CRLF and a UTF-8 BOM",
                b"\xEF\xBB\xBFlead_id,whatsapp\r\nL1,11912345678\r\nL2,11912345679\r\n".to_vec(),
                2,
                vec![],
            ),
            (
                "quoted fields with separators and quotes inside",
                b"lead_id,name,email\n\"L1\",\"Souza, \"\"Ana\"\"\",ana@example.com\n".to_vec(),
                1,
                vec![],
            ),
            (
                "missing lead id and no contact are reported by line",
                b"lead_id,phone,email,cpf\n,11912345678,,\nL2,,,\nL3,,a@example.com,\n".to_vec(),
                1,
                vec![(2, Problem::MissingLeadId), (3, Problem::NoContact)],
            ),
            (
                "a CPF in scientific notation is unusable, a CPF without its zero is kept",
                b"lead_id;cpf\nL1;1,23457E+10\nL2;1.23457e10\nL3;1234567890\n".to_vec(),
                1,
                vec![
                    (2, Problem::CpfInScientificNotation),
                    (3, Problem::CpfInScientificNotation),
                ],
            ),
            (
                "a malformed row (wrong field count) is reported and the rest read",
                b"lead_id,phone\nL1,11912345678\nL2,1191234,5679,extra\nL3,11912345670\n".to_vec(),
                2,
                vec![(
                    3,
                    Problem::FieldCount {
                        expected: 2,
                        found: 4,
                    },
                )],
            ),
            (
                "blank lines are not rows",
                b"lead_id,phone\n\nL1,11912345678\n,\n".to_vec(),
                1,
                vec![],
            ),
            (
                "extra columns ignored, first column of a kind wins",
                "Status,lead_id,phone,Telefone,Vendedor\nnovo,L1,11912345678,11000000000,Zé\n"
                    .into(),
                1,
                vec![],
            ),
        ];
        for (name, file, usable, expected_problems) in cases {
            let rows = read(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ok(&rows).len(), usable, "{name}");
            assert_eq!(problems(&rows), expected_problems, "{name}");
        }
    }

    #[test]
    fn problems_carry_the_line_a_spreadsheet_shows() {
        let cases: [(&str, &[u8], Vec<u64>); 6] = [
            ("LF", b"lead_id,phone\nL1,\nL2,\n", vec![2, 3]),
            ("CRLF", b"lead_id,phone\r\nL1,\r\nL2,\r\n", vec![2, 3]),
            ("CR only", b"lead_id,phone\rL1,\rL2,\r", vec![2, 3]),
            (
                "blank lines between rows",
                b"lead_id,phone\r\n\r\nL1,\r\n\r\nL2,\r\n",
                vec![3, 5],
            ),
            (
                "a quoted value over two lines",
                b"lead_id,name,phone\r\nL1,\"Ana\r\nLima\",\r\nL2,Bia,\r\n",
                vec![2, 4],
            ),
            (
                "BOM and CRLF",
                b"\xEF\xBB\xBFlead_id,phone\r\nL1,\r\nL2,\r\n",
                vec![2, 3],
            ),
        ];
        for (name, file, lines) in cases {
            let rows = read(file).unwrap_or_else(|e| panic!("{name}: {e}"));
            let found: Vec<u64> = problems(&rows).into_iter().map(|(l, _)| l).collect();
            assert_eq!(found, lines, "{name}");
        }
    }

    #[test]
    fn quoted_values_keep_their_commas() {
        let rows =
            read(b"lead_id,name,email\n\"L1\",\"Souza, \"\"Ana\"\"\",ana@example.com\n").unwrap();
        assert_eq!(ok(&rows)[0].name.as_deref(), Some("Souza, \"Ana\""));
        let rows = read("lead;nome;celular\nL1;Lima, Ana;11912345678\n".as_bytes()).unwrap();
        assert_eq!(ok(&rows)[0].name.as_deref(), Some("Lima, Ana"));
    }

    #[test]
    fn windows_1252_names_are_decoded() {
        // "João Conceição" in Windows-1252: ã = E3, ç = E7; not valid UTF-8.
        let mut file =
            b"lead_id;nome;telefone\r\nL1;Jo\xE3o Concei\xE7\xE3o;11912345678\r\n".to_vec();
        let rows = read(&file).unwrap();
        assert_eq!(ok(&rows)[0].name.as_deref(), Some("João Conceição"));
        // A 1252 header with an accent finds its column too.
        file = b"lead_id;Observa\xE7\xE3o;Tel\xE9fone\nL1;x;11912345678\n".to_vec();
        let rows = read(&file).unwrap();
        assert_eq!(ok(&rows)[0].phone.as_deref(), Some("11912345678"));
    }

    #[test]
    fn a_cpf_is_kept_as_written_for_the_domain_to_pad() {
        let rows = read(b"lead_id,cpf\nL1,4567890123\n").unwrap();
        assert_eq!(ok(&rows)[0].cpf.as_deref(), Some("4567890123"));
    }

    #[test]
    fn unusable_headers_fail_the_file() {
        let cases: [(&[u8], CsvError); 5] = [
            (b"", CsvError::Empty),
            (b"\xEF\xBB\xBF  \r\n", CsvError::Empty),
            (b"name,phone\nAna,11912345678\n", CsvError::NoLeadIdColumn),
            (b"nome;telefone;cpf\n", CsvError::NoLeadIdColumn),
            (
                b"lead_id,name,status\nL1,Ana,novo\n",
                CsvError::NoContactColumn,
            ),
        ];
        for (file, expected) in cases {
            assert_eq!(
                read(file).unwrap_err(),
                expected,
                "{:?}",
                String::from_utf8_lossy(file)
            );
        }
    }

    #[test]
    fn scientific_notation_is_recognised_and_plain_numbers_are_not() {
        for s in ["1.23457E+10", "1,23457E+10", "5E10", "9.9e-1", " 1.2E+10 "] {
            assert!(is_scientific(s), "{s}");
        }
        for s in [
            "12345678909",
            "123.456.789-09",
            "E10",
            "1.2E",
            "abcE+10",
            "",
            "1e+x",
        ] {
            assert!(!is_scientific(s), "{s}");
        }
    }

    #[test]
    fn header_names_fold_case_accents_and_separators() {
        assert_eq!(column("LEAD_ID"), Some(Column::LeadId));
        assert_eq!(column(" Lead Id "), Some(Column::LeadId));
        assert_eq!(column("E-Mail"), Some(Column::Email));
        assert_eq!(column("Telefóne"), Some(Column::Phone));
        assert_eq!(column("WhatsApp"), Some(Column::Phone));
        assert_eq!(column("DOCUMENTO"), Some(Column::Cpf));
        assert_eq!(column("Observação"), None);
    }

    #[test]
    fn debug_shows_no_personal_data() {
        let rows = read(
            b"lead_id,name,phone,email,cpf\nL1,Ana Lima,11912345678,ana@example.com,52998224725\n",
        )
        .unwrap();
        let shown = format!("{:?}", ok(&rows)[0]);
        for value in ["Ana", "11912345678", "ana@", "52998224725"] {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}
