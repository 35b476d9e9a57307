//! What a contact lookup answered: every candidate, people and companies, in the provider's
//! order.
//!
//! A phone on a family plan or a company line lists several entries; which one a lead gets is
//! decided per lead by [`super::name::choose`], so nothing here picks one except
//! [`Candidates::first_person`], the rule used before a lead's name is known. A CNPJ is kept
//! as a company and never read as a CPF.

use std::fmt;

use super::{Cnpj, Cpf};

/// A person a lookup listed: the CPF and the name the provider has for it.
#[derive(Clone, PartialEq)]
pub struct CpfCandidate {
    pub cpf: Cpf,
    pub name: Option<String>,
}

/// One entry of a lookup's answer.
#[derive(Clone, PartialEq)]
pub enum Candidate {
    /// An individual, identified by a CPF.
    Person(CpfCandidate),
    /// A company, identified by a CNPJ: shown as a company, never bought as a person.
    Company { cnpj: Cnpj, name: Option<String> },
}

impl Candidate {
    /// The name the provider gave, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Candidate::Person(p) => p.name.as_deref(),
            Candidate::Company { name, .. } => name.as_deref(),
        }
    }

    /// The person behind this entry, when it is one.
    pub fn person(&self) -> Option<&CpfCandidate> {
        match self {
            Candidate::Person(p) => Some(p),
            Candidate::Company { .. } => None,
        }
    }
}

/// Every valid entry of one answer, in the provider's order (entries with neither a valid CPF
/// nor a valid CNPJ are dropped when the answer is read).
#[derive(Clone, PartialEq, Default)]
pub struct Candidates(Vec<Candidate>);

impl Candidates {
    pub fn new(list: Vec<Candidate>) -> Candidates {
        Candidates(list)
    }

    /// A list of one person: what a lookup that knows a single candidate answers.
    pub fn one(person: CpfCandidate) -> Candidates {
        Candidates(vec![Candidate::Person(person)])
    }

    pub fn as_slice(&self) -> &[Candidate] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Candidate> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first person in the provider's order: the choice when no lead name can decide.
    pub fn first_person(&self) -> Option<&CpfCandidate> {
        self.0.iter().find_map(Candidate::person)
    }

    /// The people only, with their index in the whole list.
    pub fn people(&self) -> impl Iterator<Item = (usize, &CpfCandidate)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.person().map(|p| (i, p)))
    }

    pub fn into_vec(self) -> Vec<Candidate> {
        self.0
    }
}

impl<'a> IntoIterator for &'a Candidates {
    type Item = &'a Candidate;
    type IntoIter = std::slice::Iter<'a, Candidate>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Names are personal data: only their initials are printed.
fn masked_name(name: Option<&str>) -> String {
    match name {
        None => "-".to_owned(),
        Some(n) => n
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .map(|c| format!("{c}."))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

impl fmt::Debug for CpfCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CpfCandidate({}, {})",
            self.cpf,
            masked_name(self.name.as_deref())
        )
    }
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Person(p) => write!(f, "Person({p:?})"),
            Candidate::Company { cnpj, name } => {
                write!(f, "Company({cnpj}, {})", masked_name(name.as_deref()))
            }
        }
    }
}

impl fmt::Debug for Candidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_person_skips_companies_and_debug_hides_names_and_numbers() {
        let list = Candidates::new(vec![
            Candidate::Company {
                cnpj: Cnpj::parse("39182746000107").unwrap(),
                name: Some("PADARIA BOM PAO LTDA".into()),
            },
            Candidate::Person(CpfCandidate {
                cpf: Cpf::parse("52601815906").unwrap(),
                name: Some("Maria Aparecida de Souza".into()),
            }),
        ]);
        assert_eq!(
            list.first_person().map(|p| p.cpf.as_str()),
            Some("52601815906")
        );
        assert_eq!(list.people().map(|(i, _)| i).collect::<Vec<_>>(), vec![1]);
        let shown = format!("{list:?}");
        assert!(
            !shown.contains("Souza") && !shown.contains("PADARIA"),
            "{shown}"
        );
        assert!(
            !shown.contains("52601815906") && !shown.contains("39182746"),
            "{shown}"
        );
        assert!(shown.contains("M. A. d. S."), "{shown}");
    }
}
