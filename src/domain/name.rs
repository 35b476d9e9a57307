//! Whether a candidate's name is the lead's, and which candidate a lead gets.
//!
//! Pure functions over names (no I/O, no logging): the lead's name as a seller or form typed
//! it against the registry's name for each candidate a contact lookup returned. Accents,
//! case, particles (de, da, do, das, dos, e), initials and word order do not matter, so
//! "MARIA A SOUZA" is "Maria Aparecida de Souza". The rule is deliberately strict about whole
//! words: a shared surname alone never confirms.

use super::candidates::Candidates;

/// How sure the choice of a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The candidate's name agrees with the lead's.
    Confirmed,
    /// The lead has a name and it does not agree with the candidate's (or the candidate has
    /// none): the candidate is used, with a warning.
    Unconfirmed,
    /// The lead has no usable name, so nothing could be compared.
    NoLeadName,
}

impl Match {
    /// The label used in metrics and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Confirmed => "confirmed",
            Match::Unconfirmed => "unconfirmed",
            Match::NoLeadName => "no_lead_name",
        }
    }
}

/// The candidate a lead gets: its index in the whole candidate list, and how sure that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    pub quality: Match,
}

/// Words that join names and carry no identity.
const PARTICLES: &[&str] = &["de", "da", "do", "das", "dos", "e", "d", "del", "di"];

/// Whole words that must agree, besides initials, for a confirmation: one shared word is a
/// common first name or surname, not a person.
const MIN_WHOLE_WORDS: usize = 2;

/// How well `candidate` matches `lead`: [`Match::NoLeadName`] when the lead's name has no word
/// left after dropping particles.
pub fn match_quality(lead: &str, candidate: &str) -> Match {
    let lead = words(lead);
    if lead.is_empty() {
        return Match::NoLeadName;
    }
    if score(&lead, &words(candidate)).is_some() {
        Match::Confirmed
    } else {
        Match::Unconfirmed
    }
}

/// The person a lead gets from a candidate list: the best-matching person when the lead's
/// name confirms one (the earliest among equals), otherwise the first person, marked
/// [`Match::Unconfirmed`] or [`Match::NoLeadName`]. Companies are never chosen. `None` when
/// the list holds no person.
pub fn choose(lead: Option<&str>, candidates: &Candidates) -> Option<Choice> {
    let first = candidates.people().next()?.0;
    let lead = lead.map(words).unwrap_or_default();
    if lead.is_empty() {
        return Some(Choice {
            index: first,
            quality: Match::NoLeadName,
        });
    }
    let mut best: Option<(usize, usize)> = None;
    for (index, person) in candidates.people() {
        let Some(name) = person.name.as_deref() else {
            continue;
        };
        if let Some(s) = score(&lead, &words(name))
            && best.is_none_or(|(_, b)| s > b)
        {
            best = Some((index, s));
        }
    }
    Some(match best {
        Some((index, _)) => Choice {
            index,
            quality: Match::Confirmed,
        },
        None => Choice {
            index: first,
            quality: Match::Unconfirmed,
        },
    })
}

/// A confirmation score, or `None` when the names disagree. Every word of the shorter name
/// must pair with a distinct word of the longer one (equal words, or an initial and a word
/// starting with it), and at least [`MIN_WHOLE_WORDS`] pairs must be whole words (fewer only
/// when one name is a single word, where that word must agree whole). Whole-word pairs
/// count 2, initials 1, so a fuller agreement wins over a thinner one.
fn score(lead: &[String], candidate: &[String]) -> Option<usize> {
    if candidate.is_empty() {
        return None;
    }
    let (short, long) = if lead.len() <= candidate.len() {
        (lead, candidate)
    } else {
        (candidate, lead)
    };
    let mut used = vec![false; long.len()];
    let mut whole = 0usize;
    let mut initials = 0usize;
    // Whole words first, so an initial cannot take the word a whole word needs.
    let mut pending = Vec::new();
    for word in short {
        match (0..long.len()).find(|&i| !used[i] && long[i] == *word) {
            Some(i) => {
                used[i] = true;
                whole += 1;
            }
            None => pending.push(word),
        }
    }
    for word in pending {
        let initial_of = |a: &str, b: &str| a.chars().count() == 1 && b.starts_with(a);
        let found = (0..long.len())
            .find(|&i| !used[i] && (initial_of(word, &long[i]) || initial_of(&long[i], word)))?;
        used[found] = true;
        initials += 1;
    }
    if whole < MIN_WHOLE_WORDS.min(short.len()) {
        return None;
    }
    Some(whole * 2 + initials)
}

/// The comparable words of a name: accents folded, lowercase, split on anything that is not a
/// letter or digit, particles dropped.
fn words(name: &str) -> Vec<String> {
    let folded: String = name.chars().flat_map(fold).collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !PARTICLES.contains(w))
        .map(str::to_owned)
        .collect()
}

/// Lowercase without the accents Portuguese (and the usual Spanish, French, Italian and German
/// names) put on Latin letters.
fn fold(c: char) -> impl Iterator<Item = char> {
    let base = match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' | 'Á' | 'À' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'a',
        'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' | 'Í' | 'Ì' | 'Î' | 'Ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' | 'Ú' | 'Ù' | 'Û' | 'Ü' => 'u',
        'ç' | 'Ç' => 'c',
        'ñ' | 'Ñ' => 'n',
        'ý' | 'ÿ' | 'Ý' => 'y',
        // Combining marks (a decomposed accent) carry nothing to compare.
        '\u{300}'..='\u{36f}' => return None.into_iter().flatten(),
        other => return Some(other.to_lowercase()).into_iter().flatten(),
    };
    Some(base.to_lowercase()).into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Candidate, Cnpj, Cpf, CpfCandidate};
    use proptest::prelude::*;

    #[test]
    fn names_match_regardless_of_accents_case_particles_initials_and_order() {
        use Match::*;
        // (lead's name, candidate's name, expected, why)
        let table: &[(&str, &str, Match, &str)] = &[
            (
                "Maria Aparecida de Souza",
                "MARIA APARECIDA DE SOUZA",
                Confirmed,
                "case",
            ),
            (
                "José Antônio Conceição",
                "JOSE ANTONIO CONCEICAO",
                Confirmed,
                "accents",
            ),
            (
                "Jose\u{301} Anto\u{302}nio",
                "José Antônio",
                Confirmed,
                "decomposed accents",
            ),
            (
                "Maria Souza",
                "Maria Aparecida de Souza",
                Confirmed,
                "middle name and particle missing",
            ),
            (
                "Maria Aparecida Souza",
                "Maria Aparecida dos Souza",
                Confirmed,
                "another particle",
            ),
            (
                "MARIA A SOUZA",
                "Maria Aparecida de Souza",
                Confirmed,
                "initial",
            ),
            (
                "M. Aparecida Souza",
                "Maria Aparecida de Souza",
                Confirmed,
                "initial with a dot",
            ),
            (
                "Souza, Maria Aparecida",
                "Maria Aparecida de Souza",
                Confirmed,
                "surname first",
            ),
            (
                "Maria Aparecida de Souza e Silva",
                "Maria Souza Silva",
                Confirmed,
                "lead longer",
            ),
            (
                "Maria Souza",
                "João Carlos de Souza",
                Unconfirmed,
                "only the surname agrees",
            ),
            (
                "Maria Souza",
                "Maria Oliveira",
                Unconfirmed,
                "only the first name agrees",
            ),
            (
                "Maria",
                "Maria Aparecida de Souza",
                Confirmed,
                "one word, agreeing whole",
            ),
            (
                "M Souza",
                "Maria Aparecida de Souza",
                Unconfirmed,
                "an initial and one word",
            ),
            (
                "Maria B Souza",
                "Maria Aparecida de Souza",
                Unconfirmed,
                "a wrong initial",
            ),
            ("Ana Paula Lima", "Ana Lima Paula", Confirmed, "order"),
            ("", "Maria Aparecida de Souza", NoLeadName, "empty"),
            (
                "  de da  ",
                "Maria Aparecida de Souza",
                NoLeadName,
                "particles only",
            ),
            ("Maria Souza", "", Unconfirmed, "candidate without a name"),
        ];
        for (lead, candidate, expected, why) in table {
            assert_eq!(
                match_quality(lead, candidate),
                *expected,
                "{why}: {lead} / {candidate}"
            );
        }
    }

    fn person(cpf: &str, name: Option<&str>) -> Candidate {
        Candidate::Person(CpfCandidate {
            cpf: Cpf::parse(cpf).unwrap(),
            name: name.map(str::to_owned),
        })
    }

    fn company(name: &str) -> Candidate {
        Candidate::Company {
            cnpj: Cnpj::parse("39182746000107").unwrap(),
            name: Some(name.to_owned()),
        }
    }

    #[test]
    fn the_lead_name_chooses_among_the_candidates() {
        use Match::*;
        let joao = || person("52601815906", Some("JOAO CARLOS DE SOUZA"));
        let maria = || person("11144477735", Some("MARIA APARECIDA DE SOUZA"));
        // (lead's name, candidates, expected choice, why)
        type Row<'a> = (
            Option<&'a str>,
            Vec<Candidate>,
            Option<(usize, Match)>,
            &'a str,
        );
        let table: Vec<Row> = vec![
            (
                Some("Maria A. Souza"),
                vec![joao(), maria()],
                Some((1, Confirmed)),
                "two people, the second matches",
            ),
            (
                Some("João Souza"),
                vec![joao(), maria()],
                Some((0, Confirmed)),
                "two people, the first matches",
            ),
            (
                Some("Pedro Lima"),
                vec![joao(), maria()],
                Some((0, Unconfirmed)),
                "nobody matches: the first person",
            ),
            (
                None,
                vec![joao(), maria()],
                Some((0, NoLeadName)),
                "no lead name: the first person",
            ),
            (
                Some(" "),
                vec![joao(), maria()],
                Some((0, NoLeadName)),
                "a blank lead name",
            ),
            (
                Some("Maria Souza"),
                vec![company("MARIA SOUZA LTDA"), joao(), maria()],
                Some((2, Confirmed)),
                "a company named like the lead is skipped",
            ),
            (
                Some("Pedro Lima"),
                vec![company("PADARIA LTDA"), joao()],
                Some((1, Unconfirmed)),
                "the first person, not the company",
            ),
            (
                Some("Maria Souza"),
                vec![company("MARIA SOUZA LTDA")],
                None,
                "only a company: nobody to buy",
            ),
            (Some("Maria Souza"), vec![], None, "an empty list"),
            (
                Some("Maria Aparecida Souza"),
                vec![person("52601815906", Some("MARIA SOUZA")), maria()],
                Some((1, Confirmed)),
                "the fuller agreement wins",
            ),
            (
                Some("Maria Souza"),
                vec![person("52601815906", None), maria()],
                Some((1, Confirmed)),
                "a person without a name is passed over",
            ),
        ];
        for (lead, list, expected, why) in table {
            let got = choose(lead, &Candidates::new(list)).map(|c| (c.index, c.quality));
            assert_eq!(got, expected, "{why}");
        }
    }

    proptest! {
        #[test]
        fn a_name_always_confirms_itself_and_arbitrary_input_never_panics(
            a in "\\PC{0,40}", b in "\\PC{0,40}",
        ) {
            let q = match_quality(&a, &a);
            prop_assert!(q == Match::Confirmed || q == Match::NoLeadName, "{q:?}");
            let _ = match_quality(&a, &b);
        }
    }
}
