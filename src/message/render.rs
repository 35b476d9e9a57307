//! Rendering: the minijinja environment compiled once, the template checked against sample
//! data at startup, and the finished text tidied and capped. What the template sees is built
//! by `grouping.rs`.

use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::grouping::build_context;
use super::{Finding, ListedCompany, Via};
use crate::domain::name::Match;
use crate::domain::{Cnpj, Email, Person, Phone};

/// The default template, also shipped as `config/templates/message.txt.j2` for operators.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../config/templates/message.txt.j2");

/// Name under which the template is registered; it only shows up in error locations.
const TEMPLATE_NAME: &str = "message";

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

impl fmt::Debug for MessageRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRenderer").finish_non_exhaustive()
    }
}

impl MessageRenderer {
    /// Compiles the template once. Syntax errors, and templates that fail on the built-in
    /// sample data (a misspelt variable printed unguarded), are reported as `Template`, so a
    /// bad operator template stops the service at startup instead of failing every lead.
    pub fn new(template_source: String) -> Result<Self, MessageError> {
        let env = plain_text_env(TEMPLATE_NAME, template_source, Flatten::Everything)?;
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

/// Which printed values are flattened to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flatten {
    /// Every value: all of them come from a sender or a provider.
    Everything,
    /// All but values marked safe: text we rendered ourselves keeps its lines.
    AllButSafe,
}

/// A minijinja environment for plain text written into the CRM, holding `source` as
/// `name`: no HTML escaping, undefined variables printed are errors, no debug info (it would
/// copy personal data into errors), and printed values that could add a line (a fake "DADOS
/// PESSOAIS" block) or reorder the text with bidi controls flattened to one line. The
/// template's own newlines are untouched; only what `{{ … }}` prints is flattened.
pub(crate) fn plain_text_env(
    name: &'static str,
    source: String,
    flatten: Flatten,
) -> Result<Environment<'static>, MessageError> {
    let mut env = Environment::new();
    // Plain text for a CRM note: HTML escaping would turn "&" into "&amp;".
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Printing an undefined variable is an error (catches typos in operator templates),
    // while `{% if missing %}` stays allowed.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_debug(false);
    env.set_formatter(move |out, state, value| match value.as_str() {
        Some(text)
            if (flatten == Flatten::Everything || !value.is_safe())
                && crate::domain::text::has_hidden_controls(text) =>
        {
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
    env.add_template_owned(name, source)
        .map_err(|e| MessageError::Template(e.to_string()))?;
    Ok(env)
}

/// The error's kind and location only: minijinja's detail text may quote values from the
/// context, which are personal data, and this message ends up in logs.
fn describe_render_error(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("{} (template line {line})", err.kind()),
        None => err.kind().to_string(),
    }
}

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

/// Strips trailing spaces, collapses runs of blank lines into one and drops leading and
/// trailing blank lines, so operator templates need not be whitespace-perfect (the message's
/// and the lead description's alike).
pub(super) fn tidy(text: &str) -> String {
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

/// Made-up data exercising every section and every kind of block.
fn sample_findings() -> [(Option<&'static str>, Vec<Finding>); 3] {
    let person = Arc::new(Person::sample());
    // Synthetic contacts of the same types as real leads' (the phone without parsing: see
    // `Phone::sample`).
    let phone = Via::Phone(Phone::sample());
    let email =
        Via::Email(Email::parse("maria.souza@example.com").expect("the sample e-mail is valid"));
    [
        (
            Some("Maria"),
            vec![
                Finding::found(phone.clone(), person.clone(), Match::Confirmed),
                Finding::missed(email.clone()),
            ],
        ),
        (
            Some("Pedro Lima"),
            vec![Finding {
                companies: vec![ListedCompany {
                    cnpj: Cnpj::parse("39182746000107").expect("the sample CNPJ is valid"),
                    name: Some("PADARIA LTDA".into()),
                }],
                ..Finding::found(phone.clone(), person, Match::Unconfirmed)
            }],
        ),
        (None, vec![Finding::missed(phone), Finding::missed(email)]),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{found, joao, maria, phone, render};
    use super::*;

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
}
