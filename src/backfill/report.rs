//! The backfill report (`--report out.csv`): one line per row of the input file with its
//! outcome, the tier that answered and the CPF masked, so an operator can tell what happened
//! to each lead without the report becoming a copy of the personal data.

use std::io::Write;

use crate::domain::{Cpf, LeadId};
use crate::resolution::Tier;

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A person was found (and the message posted or stored).
    Found,
    /// Every contact was looked up; nobody.
    NotFound,
    /// The row could not be used (see `detail`).
    Invalid,
    /// Already enriched by an earlier run: nothing paid, nothing posted.
    AlreadyDone,
    /// `--dry-run`: a provider call would be needed.
    WouldBuy,
    /// A provider or the database failed; running the file again retries it.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::NotFound => "not_found",
            Outcome::Invalid => "invalid",
            Outcome::AlreadyDone => "already_done",
            Outcome::WouldBuy => "would_buy",
            Outcome::Failed => "failed",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct ReportLine<'a> {
    /// The line in the input file.
    pub row: u64,
    pub lead_id: Option<&'a LeadId>,
    pub outcome: Outcome,
    /// The tier that answered, when one did.
    pub tier: Option<Tier>,
    /// Printed masked (`***.***.*47-25`).
    pub cpf: Option<&'a Cpf>,
    /// Why, for invalid and failed rows: a fixed reason, never a value.
    pub detail: Option<&'a str>,
}

/// Writes the report as CSV with a header line.
pub struct ReportWriter<W: Write> {
    out: csv::Writer<W>,
}

/// A spreadsheet runs a cell starting with one of these as a formula; a lead id is text.
fn inert(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

impl<W: Write> ReportWriter<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(["row", "lead_id", "outcome", "tier", "cpf", "detail"])
            .map_err(std::io::Error::other)?;
        Ok(ReportWriter { out })
    }

    pub fn write(&mut self, line: &ReportLine<'_>) -> std::io::Result<()> {
        self.out
            .write_record([
                line.row.to_string(),
                line.lead_id.map_or(String::new(), |l| inert(l.as_str())),
                line.outcome.as_str().to_owned(),
                line.tier.map_or("", Tier::as_str).to_owned(),
                line.cpf.map_or(String::new(), Cpf::masked),
                line.detail.map_or(String::new(), inert),
            ])
            .map_err(std::io::Error::other)
    }

    /// Flushes and hands back the writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.out
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_row_with_the_cpf_masked() {
        let cpf = Cpf::parse("529.982.247-25").unwrap();
        let lead = LeadId::parse("L1").unwrap();
        let formula = LeadId::parse("=HYPERLINK(\"x\")").unwrap();
        let mut report = ReportWriter::new(Vec::new()).unwrap();
        report
            .write(&ReportLine {
                row: 2,
                lead_id: Some(&lead),
                outcome: Outcome::Found,
                tier: Some(Tier::Provider),
                cpf: Some(&cpf),
                detail: None,
            })
            .unwrap();
        report
            .write(&ReportLine {
                row: 3,
                lead_id: None,
                outcome: Outcome::Invalid,
                tier: None,
                cpf: None,
                detail: Some("no lead id"),
            })
            .unwrap();
        report
            .write(&ReportLine {
                row: 4,
                lead_id: Some(&formula),
                outcome: Outcome::NotFound,
                tier: Some(Tier::Database),
                cpf: None,
                detail: None,
            })
            .unwrap();
        let text = String::from_utf8(report.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "row,lead_id,outcome,tier,cpf,detail\n\
             2,L1,found,provider,***.***.*47-25,\n\
             3,,invalid,,,no lead id\n\
             4,\"'=HYPERLINK(\"\"x\"\")\",not_found,database,,\n"
        );
        assert!(!text.contains("529.982") && !text.contains("52998224725"));
    }
}
