//! The enrichment message: turns what each contact of a lead led to into the Portuguese plain
//! text that is posted on the lead in C2S.
//!
//! This module owns the grouping (one block per person, first-seen order), the display
//! formatting of CPFs, phones, CEPs, CNPJs and money, and the rendering through a minijinja
//! template that operators can replace without rebuilding. It must not fetch, store or log
//! anything: the input is personal data and only the finished text leaves this module.
//!
//! # Template context
//!
//! Every value is already formatted and every list already truncated, so templates only lay
//! things out:
//!
//! - `lead_name`: the lead's name, or none.
//! - `searched`, `not_found`: lists of contacts (`kind` "phone"/"email", `value` formatted,
//!   `label` like "telefone (11) 98765-4321"); `searched_text` ("o telefone … e o e-mail …")
//!   and `not_found_text` ("pelo e-mail …") are the same lists as Portuguese phrases.
//! - `blocks`: one per person found, each with `heading`, `same_person` (found through both a
//!   phone and an email), `contacts` and `person`.
//! - `person`: `cpf`, `name`, `birth_date`, `sex`, `mother_name`, `has_financial`, `income`,
//!   `purchasing_power`, `income_band`, `credit_score`, `risk`, `emails[]` (`address`,
//!   `priority`), `phones[]` (`number`, `kind`, `whatsapp`), `addresses[]` (`line` and its
//!   parts `street`, `number`, `complement`, `district`, `city`, `uf`, `cep`), `companies[]`
//!   (`cnpj`, `relation`). Missing values are none.

use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};

use crate::domain::person::{Person, PersonAddress};
use crate::domain::phone::format_national;
use crate::domain::{Email, Phone};

/// The default template, also shipped as `config/templates/message.txt.j2` for operators.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../config/templates/message.txt.j2");

/// Name under which the template is registered; it only shows up in error locations.
const TEMPLATE_NAME: &str = "message";

/// At most this many entries of each list reach the message: a CRM note is read at a glance.
const MAX_EMAILS: usize = 3;
const MAX_PHONES: usize = 3;
const MAX_ADDRESSES: usize = 2;
const MAX_COMPANIES: usize = 3;

/// The heading of a block whose person was found through both a phone and an email.
const SAME_PERSON_HEADING: &str = "Telefone e e-mail da mesma pessoa";

/// Renders the enrichment message from a template compiled once at startup.
#[derive(Clone)]
pub struct MessageRenderer {
    /// Holds the one compiled template; cheap to share, never mutated after `new`.
    env: Environment<'static>,
    /// Longest message produced, in bytes ([`MAX_MESSAGE_BYTES`] unless configured).
    max_bytes: usize,
}

/// Why a message could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The template does not compile, or fails on the built-in sample data.
    #[error("invalid message template: {0}")]
    Template(String),
    /// Rendering failed for real data.
    #[error("rendering the message failed: {0}")]
    Render(String),
}

/// What one contact of the lead led to. The lead has at most one phone and one email today, but handle any number.
#[derive(Clone, PartialEq)]
pub struct Finding {
    /// The contact that was looked up.
    pub via: Via,
    /// The person it resolved to; None = looked up, nobody found.
    pub person: Option<Arc<Person>>,
}

/// A contact of the lead.
#[derive(Clone, PartialEq, Eq)]
pub enum Via {
    /// Shown as "(11) 98765-4321".
    Phone(Phone),
    /// Shown as the canonical address.
    Email(Email),
}

// Contacts and persons are personal data: Debug never prints them.
impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Phone(_) => f.write_str("Phone(***)"),
            Via::Email(_) => f.write_str("Email(***)"),
        }
    }
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finding")
            .field("via", &self.via)
            .field("found", &self.person.is_some())
            .finish()
    }
}

impl fmt::Debug for MessageRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRenderer").finish_non_exhaustive()
    }
}

impl Via {
    fn is_phone(&self) -> bool {
        matches!(self, Via::Phone(_))
    }

    /// Machine-readable kind for templates.
    fn kind(&self) -> &'static str {
        match self {
            Via::Phone(_) => "phone",
            Via::Email(_) => "email",
        }
    }

    /// The contact as a reader would write it.
    fn display_value(&self) -> String {
        match self {
            Via::Phone(phone) => phone.formatted(),
            Via::Email(email) => email.as_str().to_owned(),
        }
    }

    /// "telefone (11) 98765-4321" / "e-mail maria@example.com".
    fn label(&self) -> String {
        let noun = match self {
            Via::Phone(_) => "telefone",
            Via::Email(_) => "e-mail",
        };
        format!("{noun} {}", self.display_value())
    }

    fn context(&self) -> Value {
        context! {
            kind => self.kind(),
            value => self.display_value(),
            label => self.label(),
        }
    }
}

impl MessageRenderer {
    /// Compiles the template once. Syntax errors, and templates that fail on the built-in
    /// sample data (a misspelt variable printed unguarded), are reported as `Template`, so a
    /// bad operator template stops the service at startup instead of failing every lead.
    pub fn new(template_source: String) -> Result<Self, MessageError> {
        let mut env = Environment::new();
        // Plain text for a CRM note: HTML escaping would turn "&" into "&amp;".
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Printing an undefined variable is an error (catches typos in operator templates),
        // while `{% if missing %}` stays allowed.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        // Debug info would copy the context (personal data) into errors.
        env.set_debug(false);
        // Every value printed comes from a sender or a provider: none may add a line (a fake
        // "DADOS PESSOAIS" block) or reorder the text with bidi controls. The template's own
        // newlines are untouched; only what `{{ … }}` prints is flattened.
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(text) if crate::domain::text::has_hidden_controls(text) => {
                minijinja::escape_formatter(
                    out,
                    state,
                    &Value::from(crate::domain::text::single_line(text)),
                )
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                // The default delimiters cannot conflict, so building the config cannot fail.
                .expect("default syntax config is valid"),
        );
        env.add_template_owned(TEMPLATE_NAME, template_source)
            .map_err(|e| MessageError::Template(e.to_string()))?;
        let renderer = MessageRenderer {
            env,
            max_bytes: MAX_MESSAGE_BYTES,
        };
        renderer.smoke_test()?;
        Ok(renderer)
    }

    /// The built-in template.
    pub fn default_template() -> Self {
        // Infallible in practice: DEFAULT_TEMPLATE is compiled into the binary and the test
        // `the_default_template_compiles` proves it compiles and renders the samples.
        Self::new(DEFAULT_TEMPLATE.to_owned()).expect("the built-in message template is valid")
    }

    /// The same renderer with another cap on the message size (at least 1 KiB, so the
    /// marker and a readable start always fit).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1024);
        self
    }

    /// Renders the message for a lead from what each of its contacts led to.
    pub fn render(
        &self,
        lead_name: Option<&str>,
        findings: &[Finding],
    ) -> Result<String, MessageError> {
        self.render_context(build_context(lead_name, findings))
            .map_err(MessageError::Render)
    }

    fn render_context(&self, ctx: Value) -> Result<String, String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| describe_render_error(&e))?;
        let text = template
            .render(ctx)
            .map_err(|e| describe_render_error(&e))?;
        Ok(cap(tidy(&text), self.max_bytes))
    }

    /// Renders fixed sample data through every path of a typical template.
    fn smoke_test(&self) -> Result<(), MessageError> {
        for (lead_name, findings) in sample_findings() {
            self.render_context(build_context(lead_name, &findings))
                .map_err(MessageError::Template)?;
        }
        Ok(())
    }
}

/// The error's kind and location only: minijinja's detail text may quote values from the
/// context, which are personal data, and this message ends up in logs.
fn describe_render_error(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("{} (template line {line})", err.kind()),
        None => err.kind().to_string(),
    }
}

/// Strips trailing spaces, collapses runs of blank lines into one and drops leading and
/// trailing blank lines, so operator templates need not be whitespace-perfect.
/// Default longest message posted, in bytes (`ENRICHER__MESSAGE__MAX_BYTES`). Fields and lists
/// are capped before they get here, so only an operator template that repeats itself reaches it.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The text cut at `max` bytes on a character boundary, with a marker saying so.
fn cap(mut text: String, max: usize) -> String {
    const MARKER: &str = "\n[…]";
    if text.len() <= max {
        return text;
    }
    let mut end = max - MARKER.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARKER);
    text
}

fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_blank = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            pending_blank = !out.is_empty();
            continue;
        }
        if pending_blank {
            out.push('\n');
            pending_blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// One person and the contacts that led to them.
struct Group<'a> {
    person: &'a Person,
    vias: Vec<&'a Via>,
}

fn build_context(lead_name: Option<&str>, findings: &[Finding]) -> Value {
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

/// "RUA DAS FLORES, 120 - AP 52, MOEMA - SAO PAULO/SP - CEP 04077-000", leaving out what is
/// missing; None when nothing is known.
fn address_line(a: &PersonAddress) -> Option<String> {
    let mut place = a.street.clone().unwrap_or_default();
    if let Some(number) = &a.number {
        if place.is_empty() {
            place.push_str(number);
        } else {
            place = format!("{place}, {number}");
        }
    }
    if let Some(complement) = &a.complement {
        place = join_nonempty(&place, " - ", complement);
    }
    if let Some(district) = &a.district {
        place = join_nonempty(&place, ", ", district);
    }
    let city = match (&a.city, &a.uf) {
        (Some(city), Some(uf)) => format!("{city}/{uf}"),
        (Some(city), None) => city.clone(),
        (None, Some(uf)) => uf.clone(),
        (None, None) => String::new(),
    };
    let cep = a
        .cep
        .as_deref()
        .map(|c| format!("CEP {}", format_cep(c)))
        .unwrap_or_default();
    let parts: Vec<&str> = [place.as_str(), city.as_str(), cep.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" - "))
}

fn join_nonempty(head: &str, sep: &str, tail: &str) -> String {
    if head.is_empty() {
        tail.to_owned()
    } else {
        format!("{head}{sep}{tail}")
    }
}

/// Portuguese list: "a", "a e b", "a, b e c".
fn join_pt(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} e {last}", init.join(", ")),
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// "04077000" -> "04077-000"; anything else unchanged.
pub fn format_cep(digits: &str) -> String {
    if digits.len() == 8 && all_digits(digits) {
        format!("{}-{}", &digits[..5], &digits[5..])
    } else {
        digits.to_owned()
    }
}

/// "11222333000181" -> "11.222.333/0001-81"; anything else unchanged.
pub fn format_cnpj(digits: &str) -> String {
    if digits.len() == 14 && all_digits(digits) {
        format!(
            "{}.{}.{}/{}-{}",
            &digits[..2],
            &digits[2..5],
            &digits[5..8],
            &digits[8..12],
            &digits[12..]
        )
    } else {
        digits.to_owned()
    }
}

/// "8500,50" / "8500.5" / "8500" / "8.500,50" -> "R$ 8.500,50"; anything else unchanged.
pub fn format_money(raw: &str) -> String {
    let trimmed = raw.trim();
    let amount = trimmed
        .strip_prefix("R$")
        .map(str::trim_start)
        .unwrap_or(trimmed);
    match split_amount(amount) {
        Some((int, cents)) => format!("R$ {},{cents}", group_thousands(&int)),
        None => raw.to_owned(),
    }
}

/// Integer digits and two cent digits of an amount written either Brazilian style
/// ("8.500,50") or with a decimal point ("8500.5"); None for any other shape.
fn split_amount(s: &str) -> Option<(String, String)> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
    {
        return None;
    }
    let (int, frac) = if let Some((int, frac)) = s.rsplit_once(',') {
        // A comma is the decimal separator; any dots before it group thousands.
        (int, Some(frac))
    } else if let Some((int, frac)) = s.rsplit_once('.')
        && !int.contains('.')
        && frac.len() <= 2
    {
        // A single dot followed by one or two digits is a decimal point ("8500.5").
        (int, Some(frac))
    } else {
        // Otherwise dots can only be thousands separators ("1.500").
        (s, None)
    };

    let int_digits = if int.contains('.') {
        let mut groups = int.split('.');
        let first = groups.next()?;
        let valid = (1..=3).contains(&first.len())
            && all_digits(first)
            && groups.all(|g| g.len() == 3 && all_digits(g));
        if !valid {
            return None;
        }
        int.replace('.', "")
    } else {
        int.to_owned()
    };
    if int_digits.is_empty() || !all_digits(&int_digits) {
        return None;
    }
    let cents = match frac {
        None => "00".to_owned(),
        Some(f) if all_digits(f) && f.len() == 2 => f.to_owned(),
        Some(f) if all_digits(f) && f.len() == 1 => format!("{f}0"),
        Some(_) => return None,
    };
    let trimmed = int_digits.trim_start_matches('0');
    let int_digits = if trimmed.is_empty() { "0" } else { trimmed };
    Some((int_digits.to_owned(), cents))
}

/// "8500" -> "8.500".
fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

/// Made-up data exercising every section and every kind of block.
fn sample_findings() -> [(Option<&'static str>, Vec<Finding>); 2] {
    let person = Arc::new(Person::sample());
    // Synthetic contacts that parse: the sample is built from the same types as real leads.
    let phone = Via::Phone(Phone::parse("11987654321").expect("the sample phone is valid"));
    let email =
        Via::Email(Email::parse("maria.souza@example.com").expect("the sample e-mail is valid"));
    [
        (
            Some("Maria"),
            vec![
                Finding {
                    via: phone.clone(),
                    person: Some(person),
                },
                Finding {
                    via: email.clone(),
                    person: None,
                },
            ],
        ),
        (
            None,
            vec![
                Finding {
                    via: phone,
                    person: None,
                },
                Finding {
                    via: email,
                    person: None,
                },
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cpf;
    use crate::domain::person::{PersonCompany, PersonEmail, PersonPhone};

    /// The sample person, which the Work API fixture reads into (MARIA, 526.018.159-06).
    fn maria() -> Arc<Person> {
        Arc::new(Person::sample())
    }

    /// A second, sparse person: no financial data, no lists.
    fn joao() -> Arc<Person> {
        Arc::new(Person {
            cpf: Cpf::parse("11144477735").unwrap(),
            name: Some("JOAO DA SILVA".into()),
            birth_date: None,
            sex: Some("Masculino".into()),
            mother_name: None,
            income: None,
            purchasing_power: None,
            income_band: None,
            credit_score: None,
            risk: None,
            emails: vec![],
            phones: vec![],
            addresses: vec![],
            companies: vec![],
        })
    }

    fn phone() -> Via {
        Via::Phone(Phone::parse("11987654321").unwrap())
    }

    fn email() -> Via {
        Via::Email(Email::parse("maria.souza@example.com").unwrap())
    }

    fn found(via: Via, person: &Arc<Person>) -> Finding {
        Finding {
            via,
            person: Some(Arc::clone(person)),
        }
    }

    fn missed(via: Via) -> Finding {
        Finding { via, person: None }
    }

    fn render(lead_name: Option<&str>, findings: &[Finding]) -> String {
        let text = MessageRenderer::default_template()
            .render(lead_name, findings)
            .unwrap();
        assert_tidy(&text);
        text
    }

    fn assert_tidy(text: &str) {
        assert!(!text.contains("\n\n\n"), "run of blank lines:\n{text}");
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "trailing spaces:\n{text}"
        );
        assert!(!text.starts_with('\n') && !text.ends_with('\n'), "{text:?}");
        assert!(
            !text.contains("none"),
            "a missing value was printed:\n{text}"
        );
    }

    #[test]
    fn values_with_newlines_escape_or_bidi_controls_cannot_add_lines_or_blocks() {
        let mut spoofed = (*joao()).clone();
        spoofed.name = Some("JOAO\n\n✅ DADOS PESSOAIS\nCPF: 000.000.000-00".into());
        spoofed.mother_name = Some("ANA\u{1b}[2J\u{7}\u{202E}AVLIS".into());
        let lead = "Maria\r\n\n✅ DADOS PESSOAIS\nCPF: 111.111.111-11\u{85}\u{2066}x";
        let text = render(Some(lead), &[found(phone(), &Arc::new(spoofed))]);
        let starting = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(starting("✅ DADOS PESSOAIS"), 1, "{text}");
        assert_eq!(starting("CPF:"), 1, "{text}");
        assert!(
            !crate::domain::text::has_hidden_controls(&text.replace('\n', "")),
            "{text:?}"
        );
        assert!(
            text.starts_with("🔎 ENRIQUECIMENTO DE DADOS - Maria "),
            "{text}"
        );
    }

    #[test]
    fn a_message_never_exceeds_the_size_cap() {
        let long = "{% for i in range(100000) %}ção{% endfor %}".to_owned();
        let renderer = MessageRenderer::new(long).unwrap();
        let text = renderer.render(None, &[]).unwrap();
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        assert!(text.ends_with("[…]"));
        let smaller =
            MessageRenderer::new("{% for i in range(100000) %}ção{% endfor %}".to_owned())
                .unwrap()
                .with_max_bytes(2000);
        let text = smaller.render(None, &[]).unwrap();
        assert!(text.len() <= 2000 && text.len() > 1990, "{}", text.len());
    }

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
    fn the_default_template_compiles() {
        MessageRenderer::new(DEFAULT_TEMPLATE.to_owned()).unwrap();
    }

    #[test]
    fn the_renderer_can_be_shared_between_threads() {
        fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
        assert_shareable::<MessageRenderer>();
    }

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
                number: None,
                complement: None,
                district: None,
                city: None,
                uf: None,
                cep: None,
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

    #[test]
    fn addresses_leave_out_missing_parts() {
        let base = PersonAddress {
            street: None,
            number: None,
            complement: None,
            district: None,
            city: None,
            uf: None,
            cep: None,
        };
        let cases = [
            (
                PersonAddress {
                    street: Some("RUA DAS FLORES".into()),
                    number: Some("120".into()),
                    city: Some("SAO PAULO".into()),
                    uf: Some("SP".into()),
                    ..base.clone()
                },
                Some("RUA DAS FLORES, 120 - SAO PAULO/SP"),
            ),
            (
                PersonAddress {
                    district: Some("MOEMA".into()),
                    cep: Some("04077000".into()),
                    ..base.clone()
                },
                Some("MOEMA - CEP 04077-000"),
            ),
            (
                PersonAddress {
                    street: Some("RUA A".into()),
                    complement: Some("FUNDOS".into()),
                    uf: Some("RJ".into()),
                    ..base.clone()
                },
                Some("RUA A - FUNDOS - RJ"),
            ),
            (base.clone(), None),
        ];
        for (address, expected) in cases {
            assert_eq!(address_line(&address).as_deref(), expected);
        }
    }

    #[test]
    fn ceps_are_formatted() {
        let cases = [
            ("04077000", "04077-000"),
            ("4077000", "4077000"),
            ("04077-000", "04077-000"),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_cep(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn cnpjs_are_formatted() {
        let cases = [
            ("11222333000181", "11.222.333/0001-81"),
            ("1122233300018", "1122233300018"),
            ("11.222.333/0001-81", "11.222.333/0001-81"),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_cnpj(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn money_is_formatted_in_reais() {
        let cases = [
            ("8500,50", "R$ 8.500,50"),
            ("8500.5", "R$ 8.500,50"),
            ("8500.50", "R$ 8.500,50"),
            ("8500", "R$ 8.500,00"),
            ("8.500,50", "R$ 8.500,50"),
            ("R$ 8500,50", "R$ 8.500,50"),
            ("1.500", "R$ 1.500,00"),
            ("1234567,8", "R$ 1.234.567,80"),
            ("0", "R$ 0,00"),
            ("950", "R$ 950,00"),
            ("0,5", "R$ 0,50"),
            ("007,00", "R$ 7,00"),
            ("abc", "abc"),
            ("8500,505", "8500,505"),
            ("85.00.0", "85.00.0"),
            ("-100", "-100"),
            (",50", ",50"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(format_money(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn lists_are_joined_the_portuguese_way() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_pt(&s(&[])), "");
        assert_eq!(join_pt(&s(&["a"])), "a");
        assert_eq!(join_pt(&s(&["a", "b"])), "a e b");
        assert_eq!(join_pt(&s(&["a", "b", "c"])), "a, b e c");
    }

    #[test]
    fn a_template_with_a_syntax_error_is_a_template_error() {
        let err = MessageRenderer::new("{% if blocks %}never closed".to_owned()).unwrap_err();
        assert!(matches!(err, MessageError::Template(_)), "{err:?}");
    }

    #[test]
    fn a_template_printing_an_unknown_variable_is_a_template_error() {
        let err = MessageRenderer::new("Olá {{ lead_nmae }}".to_owned()).unwrap_err();
        assert!(matches!(err, MessageError::Template(_)), "{err:?}");
    }

    #[test]
    fn an_operator_template_can_lay_out_the_context_its_own_way() {
        let renderer = MessageRenderer::new(
            "{% for b in blocks %}{{ b.person.name }} <{{ b.contacts[0].value }}> & cia{% endfor %}"
                .to_owned(),
        )
        .unwrap();
        let text = renderer.render(None, &[found(phone(), &maria())]).unwrap();
        // No HTML escaping in a plain-text note.
        assert_eq!(text, "MARIA APARECIDA SOUZA <(11) 98765-4321> & cia");
    }

    #[test]
    fn whitespace_is_tidied_whatever_the_template() {
        let renderer = MessageRenderer::new("\n\n  a  \n\n\n\nb\t\n\n\n".to_owned()).unwrap();
        assert_eq!(renderer.render(None, &[]).unwrap(), "  a\n\nb");
    }

    #[test]
    fn debug_output_hides_contacts() {
        let finding = found(phone(), &maria());
        let printed = format!("{finding:?} {:?}", email());
        assert_eq!(
            printed,
            r#"Finding { via: Phone(***), found: true } Email(***)"#
        );
    }
}
