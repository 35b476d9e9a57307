//! Grouping: the findings of a lead turned into the template's context, one block per person
//! in first-seen order, every value formatted and every list truncated, so templates only lay
//! things out.

use minijinja::context;
use minijinja::value::Value;

use super::format::{address_line, format_cep, format_cnpj, format_money, join_pt};
use super::{Finding, Via};
use crate::domain::Person;
use crate::domain::phone::format_national;

/// At most this many entries of each list reach the message: a CRM note is read at a glance.
const MAX_EMAILS: usize = 3;
const MAX_PHONES: usize = 3;
const MAX_ADDRESSES: usize = 2;
const MAX_COMPANIES: usize = 3;

/// The heading of a block whose person was found through both a phone and an email.
const SAME_PERSON_HEADING: &str = "Telefone e e-mail da mesma pessoa";

/// One person and the contacts that led to them.
struct Group<'a> {
    person: &'a Person,
    vias: Vec<&'a Via>,
}

pub(super) fn build_context(lead_name: Option<&str>, findings: &[Finding]) -> Value {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut not_found: Vec<&Via> = Vec::new();
    for finding in findings {
        match &finding.person {
            None => not_found.push(&finding.via),
            Some(person) => match groups.iter_mut().find(|g| g.person.cpf == person.cpf) {
                Some(group) => group.vias.push(&finding.via),
                None => groups.push(Group {
                    person,
                    vias: vec![&finding.via],
                }),
            },
        }
    }

    let blocks: Vec<Value> = groups
        .iter()
        .map(|group| {
            let same_person =
                group.vias.iter().any(|v| v.is_phone()) && group.vias.iter().any(|v| !v.is_phone());
            let heading = if same_person {
                SAME_PERSON_HEADING.to_owned()
            } else {
                let via: Vec<String> = group
                    .vias
                    .iter()
                    .map(|v| format!("pelo {}", v.label()))
                    .collect();
                format!("Encontrado {}", join_pt(&via))
            };
            context! {
                heading,
                same_person,
                contacts => group.vias.iter().map(|v| v.context()).collect::<Vec<_>>(),
                person => person_context(group.person),
            }
        })
        .collect();

    let searched: Vec<&Via> = findings.iter().map(|f| &f.via).collect();
    let searched_text = join_pt(
        &searched
            .iter()
            .map(|v| format!("o {}", v.label()))
            .collect::<Vec<_>>(),
    );
    let not_found_text = join_pt(
        &not_found
            .iter()
            .map(|v| format!("pelo {}", v.label()))
            .collect::<Vec<_>>(),
    );

    context! {
        lead_name => lead_name.map(str::trim).filter(|n| !n.is_empty()),
        blocks,
        searched => searched.iter().map(|v| v.context()).collect::<Vec<_>>(),
        searched_text,
        not_found => not_found.iter().map(|v| v.context()).collect::<Vec<_>>(),
        not_found_text,
    }
}

fn person_context(p: &Person) -> Value {
    let has_financial = [
        &p.income,
        &p.purchasing_power,
        &p.income_band,
        &p.credit_score,
        &p.risk,
    ]
    .iter()
    .any(|v| v.is_some());

    let emails: Vec<Value> = p
        .emails
        .iter()
        .take(MAX_EMAILS)
        .map(|e| context! { address => &e.address, priority => &e.priority })
        .collect();
    let phones: Vec<Value> = p
        .phones
        .iter()
        .take(MAX_PHONES)
        .map(|t| {
            context! {
                number => format_national(&t.number),
                kind => &t.kind,
                whatsapp => t.whatsapp,
            }
        })
        .collect();
    let addresses: Vec<Value> = p
        .addresses
        .iter()
        .filter_map(|a| address_line(a).map(|line| (a, line)))
        .take(MAX_ADDRESSES)
        .map(|(a, line)| {
            context! {
                line,
                street => &a.street,
                number => &a.number,
                complement => &a.complement,
                district => &a.district,
                city => &a.city,
                uf => &a.uf,
                cep => a.cep.as_deref().map(format_cep),
            }
        })
        .collect();
    let companies: Vec<Value> = p
        .companies
        .iter()
        .take(MAX_COMPANIES)
        .map(|c| context! { cnpj => format_cnpj(&c.cnpj), relation => &c.relation })
        .collect();

    context! {
        cpf => p.cpf.formatted(),
        name => &p.name,
        birth_date => &p.birth_date,
        sex => &p.sex,
        mother_name => &p.mother_name,
        has_financial,
        income => p.income.as_deref().map(format_money),
        purchasing_power => &p.purchasing_power,
        income_band => &p.income_band,
        credit_score => &p.credit_score,
        risk => &p.risk,
        emails,
        phones,
        addresses,
        companies,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::{email, found, joao, maria, missed, phone, render};
    use super::*;
    use crate::domain::person::{PersonAddress, PersonCompany, PersonEmail, PersonPhone};

    fn count(text: &str, needle: &str) -> usize {
        text.matches(needle).count()
    }

    /// The full block the fixture person renders to, below its heading.
    const MARIA_SECTIONS: &str = "\
✅ DADOS PESSOAIS
Nome: MARIA APARECIDA SOUZA
CPF: 526.018.159-06
Data de nascimento: 14/03/1984
Sexo: Feminino
Mãe: ANA LUCIA SOUZA

💰 DADOS FINANCEIROS
Renda: R$ 8.500,50
Poder aquisitivo: MEDIO ALTO
Faixa de renda: De R$ 7018 até R$ 15000
Score de crédito: 688
Risco: BAIXO

📧 EMAILS
• maria.souza@example.com (prioridade 1)
• msouza84@example.org (prioridade 2)

📱 TELEFONES
• (11) 98765-4321 - CELULAR ✅ WhatsApp
• (11) 3800-1234 - FIXO

🏠 ENDEREÇOS
• RUA DAS FLORES, 120 - AP 52, MOEMA - SAO PAULO/SP - CEP 04077-000

🏢 EMPRESAS
• 11.222.333/0001-81 - SOCIO-ADMINISTRADOR";

    #[test]
    fn the_same_person_via_phone_and_email_renders_one_block_with_the_same_person_heading() {
        let maria = maria();
        let text = render(
            Some("Maria Souza"),
            &[found(phone(), &maria), found(email(), &maria)],
        );
        let expected = format!(
            "🔎 ENRIQUECIMENTO DE DADOS - Maria Souza\n\n👤 Telefone e e-mail da mesma pessoa\n\n{MARIA_SECTIONS}"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn different_persons_render_one_labelled_block_each() {
        let text = render(None, &[found(phone(), &maria()), found(email(), &joao())]);
        assert_eq!(count(&text, "👤 "), 2, "{text}");
        assert_eq!(count(&text, "✅ DADOS PESSOAIS"), 2, "{text}");
        assert!(!text.contains(SAME_PERSON_HEADING), "{text}");

        let phone_block = text
            .find("👤 Encontrado pelo telefone (11) 98765-4321\n")
            .expect("phone block");
        let email_block = text
            .find("👤 Encontrado pelo e-mail maria.souza@example.com\n")
            .expect("email block");
        assert!(phone_block < email_block, "first-seen order:\n{text}");
        // Each person's data sits under its own heading.
        let (first, second) = text.split_at(email_block);
        assert!(first.contains("CPF: 526.018.159-06"), "{text}");
        assert!(second.contains("Nome: JOAO DA SILVA\nCPF: 111.444.777-35\nSexo: Masculino"));
        assert!(!second.contains("MARIA"), "{text}");
    }

    #[test]
    fn a_phone_only_lead_renders_one_block_labelled_with_the_phone() {
        let text = render(Some("Maria"), &[found(phone(), &maria())]);
        assert_eq!(
            text,
            format!(
                "🔎 ENRIQUECIMENTO DE DADOS - Maria\n\n👤 Encontrado pelo telefone (11) 98765-4321\n\n{MARIA_SECTIONS}"
            )
        );
    }

    #[test]
    fn an_email_only_lead_renders_one_block_labelled_with_the_email() {
        let text = render(None, &[found(email(), &maria())]);
        assert_eq!(
            text,
            format!(
                "🔎 ENRIQUECIMENTO DE DADOS\n\n👤 Encontrado pelo e-mail maria.souza@example.com\n\n{MARIA_SECTIONS}"
            )
        );
    }

    #[test]
    fn nobody_found_says_which_contacts_were_looked_up() {
        let text = render(Some("Maria"), &[missed(phone()), missed(email())]);
        assert_eq!(
            text,
            "🔎 ENRIQUECIMENTO DE DADOS - Maria\n\nConsultamos o telefone (11) 98765-4321 e o e-mail maria.souza@example.com: nenhum dado encontrado."
        );
    }

    #[test]
    fn nobody_found_through_a_single_contact() {
        let text = render(None, &[missed(phone())]);
        assert_eq!(
            text,
            "🔎 ENRIQUECIMENTO DE DADOS\n\nConsultamos o telefone (11) 98765-4321: nenhum dado encontrado."
        );
    }

    #[test]
    fn a_lead_without_contacts_says_there_was_nothing_to_look_up() {
        let text = render(None, &[]);
        assert_eq!(
            text,
            "🔎 ENRIQUECIMENTO DE DADOS\n\nNenhum telefone ou e-mail para consultar."
        );
    }

    #[test]
    fn a_contact_that_found_nobody_gets_one_line_next_to_the_found_person() {
        let text = render(None, &[found(phone(), &maria()), missed(email())]);
        assert!(
            text.starts_with(
                "🔎 ENRIQUECIMENTO DE DADOS\n\n👤 Encontrado pelo telefone (11) 98765-4321\n\n✅ DADOS PESSOAIS\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "• 11.222.333/0001-81 - SOCIO-ADMINISTRADOR\n\nℹ️ Nada encontrado pelo e-mail maria.souza@example.com."
            ),
            "{text}"
        );
        assert_eq!(count(&text, "Nada encontrado"), 1);
    }

    #[test]
    fn a_blank_lead_name_is_left_out() {
        let text = render(Some("   "), &[missed(phone())]);
        assert!(text.starts_with("🔎 ENRIQUECIMENTO DE DADOS\n\n"), "{text}");
    }

    #[test]
    fn a_person_without_financial_data_has_no_financial_section() {
        let text = render(None, &[found(phone(), &joao())]);
        assert_eq!(
            text,
            "🔎 ENRIQUECIMENTO DE DADOS\n\n👤 Encontrado pelo telefone (11) 98765-4321\n\n✅ DADOS PESSOAIS\nNome: JOAO DA SILVA\nCPF: 111.444.777-35\nSexo: Masculino"
        );
        assert!(!text.contains("💰"));
    }

    #[test]
    fn any_financial_field_alone_brings_the_financial_section() {
        let mut person = (*joao()).clone();
        person.risk = Some("ALTO".into());
        let text = render(None, &[found(phone(), &Arc::new(person))]);
        assert!(
            text.ends_with("Sexo: Masculino\n\n💰 DADOS FINANCEIROS\nRisco: ALTO"),
            "{text}"
        );
    }

    #[test]
    fn long_lists_are_truncated() {
        let mut person = (*joao()).clone();
        person.emails = (1..=5)
            .map(|i| PersonEmail {
                address: format!("pessoa{i}@example.com"),
                priority: None,
            })
            .collect();
        person.phones = (1..=5)
            .map(|i| PersonPhone {
                number: format!("1198765432{i}"),
                kind: None,
                whatsapp: false,
            })
            .collect();
        person.addresses = (1..=4)
            .map(|i| PersonAddress {
                street: Some(format!("RUA {i}")),
                ..PersonAddress::default()
            })
            .collect();
        person.companies = (1..=5)
            .map(|i| PersonCompany {
                cnpj: format!("1122233300018{i}"),
                relation: None,
            })
            .collect();
        let text = render(None, &[found(phone(), &Arc::new(person))]);
        let expected_tail = "\
📧 EMAILS
• pessoa1@example.com
• pessoa2@example.com
• pessoa3@example.com

📱 TELEFONES
• (11) 98765-4321
• (11) 98765-4322
• (11) 98765-4323

🏠 ENDEREÇOS
• RUA 1
• RUA 2

🏢 EMPRESAS
• 11.222.333/0001-81
• 11.222.333/0001-82
• 11.222.333/0001-83";
        assert!(text.ends_with(expected_tail), "{text}");
    }
}
